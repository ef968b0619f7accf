//! The pod network `nodeimg verify` installs: the image's own default CNI (kindnetd, as
//! kind applies it) when every image it needs is in the node, else a bridge + host-local
//! conflist written for the check.

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use crate::reference::normalize;

pub const DEFAULT_MANIFEST: &str = "/kind/manifests/default-cni.yaml";
pub const BRIDGE_CONFLIST: &str = "/etc/cni/net.d/10-nodeimg-bridge.conflist";
const BRIDGE_TEMPLATE: &str = include_str!("../../templates/bridge.conflist.hbs");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    /// The image's default CNI if all its images are in the node, else bridge.
    Auto,
    /// `/kind/manifests/default-cni.yaml`, applied like kind does.
    Default,
    /// A bridge + host-local conflist, no pods needed.
    Bridge,
}

/// The images a manifest runs (`image:` fields), canonical.
pub fn manifest_images(manifest: &str) -> Vec<String> {
    manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image:"))
        .map(|i| normalize(i.trim().trim_matches(['"', '\''])))
        .collect()
}

/// Which CNI `choice` comes to for a node holding `present` images (canonical names), and
/// the reason when auto falls back to the bridge.
pub fn decide(choice: Cni, manifest: Option<&str>, present: &[String]) -> (Cni, Option<String>) {
    if choice != Cni::Auto {
        return (choice, None);
    }
    let Some(manifest) = manifest else {
        return (Cni::Bridge, Some(format!("the image has no {DEFAULT_MANIFEST}")));
    };
    let missing: Vec<String> =
        manifest_images(manifest).into_iter().filter(|i| !present.contains(i)).collect();
    if missing.is_empty() {
        (Cni::Default, None)
    } else {
        (Cni::Bridge, Some(format!("the default CNI's images are not in the node: {}", missing.join(", "))))
    }
}

/// kind renders the manifest as a Go template only when it contains this (a substring
/// check, as kind's `installCNI` action does).
pub const TEMPLATE_MARKER: &str = "would you kindly template this file";
/// kind appends a `CONTROL_PLANE_ENDPOINT` env var to the DaemonSet's first container only
/// when the (templated) manifest contains this.
pub const PATCH_MARKER: &str = "would you kindly patch this file";

/// What kind's `installCNI` action does to `/kind/manifests/default-cni.yaml` before it
/// applies it: with [`TEMPLATE_MARKER`], render it as a Go template whose only data is
/// `.PodSubnet`; then, with [`PATCH_MARKER`], add the env var `CONTROL_PLANE_ENDPOINT`
/// (`<node-ip>:6443` for a single control plane) to the first container of every apps/v1
/// DaemonSet (kind's JSON 6902 patch `add /spec/template/spec/containers/0/env/-`). Without
/// the markers the manifest is returned as it is. Fails where kind would: a template
/// action other than `.PodSubnet` or a comment, an unclosed action, a DaemonSet whose first
/// container has no `env` list.
pub fn kind_template(manifest: &str, pod_subnet: &str, control_plane_endpoint: &str) -> Result<String> {
    let mut out = manifest.to_owned();
    if out.contains(TEMPLATE_MARKER) {
        out = go_template(&out, pod_subnet).context("rendering the CNI manifest as kind's Go template")?;
    }
    if out.contains(PATCH_MARKER) {
        out = add_daemonset_env(&out, "CONTROL_PLANE_ENDPOINT", control_plane_endpoint)
            .context("patching the CNI manifest as kind does")?;
    }
    Ok(out)
}

/// The part of Go's text/template kind's manifests use: `{{ .PodSubnet }}` with optional
/// trim markers (`{{- ` / ` -}}`) and comments (`{{/* */}}`).
fn go_template(text: &str, pod_subnet: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close =
            after.find("}}").ok_or_else(|| anyhow!("unclosed action: {}", first_line(&rest[open..])))?;
        let mut action = &after[..close];
        rest = &after[close + 2..];
        if let Some(a) = action.strip_prefix('-').filter(|a| a.starts_with(char::is_whitespace)) {
            out.truncate(out.trim_end().len());
            action = a;
        }
        if let Some(a) = action.strip_suffix('-').filter(|a| a.ends_with(char::is_whitespace)) {
            rest = rest.trim_start();
            action = a;
        }
        match action.trim() {
            ".PodSubnet" => out.push_str(pod_subnet),
            a if a.starts_with("/*") && a.ends_with("*/") => {}
            a => bail!("unsupported template action {{{{{a}}}}}: kind's data has only .PodSubnet"),
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// A line that holds YAML content (not blank, not a comment).
fn content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// The lines (start..end) holding the value of the mapping key on line `at` whose key sits
/// at column `col`: deeper lines, and sequence items at the key's own column.
fn block(lines: &[&str], at: usize, col: usize, end: usize) -> (usize, usize) {
    let mut i = at + 1;
    while i < end {
        let l = lines[i];
        if content(l) && (indent(l) < col || (indent(l) == col && !l.trim_start().starts_with('-'))) {
            break;
        }
        i += 1;
    }
    (at + 1, i)
}

/// The line in `lines[start..end]` holding `key:` at column `col` (after `- ` for the first
/// line of a sequence item).
fn key_at(lines: &[&str], start: usize, end: usize, col: usize, key: &str) -> Option<usize> {
    (start..end).find(|&i| {
        let l = lines[i];
        let body = &l[indent(l).min(l.len())..];
        let (c, body) = match body.strip_prefix("- ") {
            Some(b) => (indent(l) + 2 + indent(b), b.trim_start()),
            None => (indent(l), body),
        };
        c == col && (body == format!("{key}:") || body.starts_with(&format!("{key}: ")))
    })
}

/// The first content line in a range, and its column.
fn first_content(lines: &[&str], start: usize, end: usize) -> Option<(usize, usize)> {
    (start..end).find(|&i| content(lines[i])).map(|i| (i, indent(lines[i])))
}

/// Appends `{name, value}` to `spec.template.spec.containers[0].env` of every apps/v1
/// DaemonSet in a multi-document YAML manifest, keeping everything else as it is.
fn add_daemonset_env(manifest: &str, name: &str, value: &str) -> Result<String> {
    let lines: Vec<&str> = manifest.lines().collect();
    let mut docs = Vec::new();
    let mut start = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("---") {
            docs.push((start, i));
            start = i + 1;
        }
    }
    docs.push((start, lines.len()));
    let mut inserts = Vec::new();
    for (start, end) in docs {
        let doc = &lines[start..end];
        let is = |k: &str, v: &str| doc.iter().any(|l| l.trim_end() == format!("{k}: {v}"));
        if !(is("kind", "DaemonSet") && is("apiVersion", "apps/v1")) {
            continue;
        }
        let mut range = (start, end);
        let mut col = 0;
        for key in ["spec", "template", "spec", "containers"] {
            let at = key_at(&lines, range.0, range.1, col, key)
                .ok_or_else(|| anyhow!("the DaemonSet has no {key} where kind patches"))?;
            range = block(&lines, at, col, range.1);
            col = first_content(&lines, range.0, range.1)
                .map(|(_, c)| c)
                .ok_or_else(|| anyhow!("the DaemonSet's {key} is empty"))?;
        }
        // containers[0]: from its `- ` line to the next item at the same column.
        let (item, dash) = first_content(&lines, range.0, range.1)
            .filter(|(i, _)| lines[*i].trim_start().starts_with("- "))
            .ok_or_else(|| anyhow!("the DaemonSet's containers are not a block sequence"))?;
        let item_end =
            (item + 1..range.1).find(|&i| content(lines[i]) && indent(lines[i]) <= dash).unwrap_or(range.1);
        let key_col = dash + 2 + indent(&lines[item][dash + 2..]);
        let env = key_at(&lines, item, item_end, key_col, "env")
            .ok_or_else(|| anyhow!("the DaemonSet's first container has no env list to add {name} to"))?;
        let (env_start, env_end) = block(&lines, env, key_col, item_end);
        let (_, env_col) = first_content(&lines, env_start, env_end)
            .filter(|(i, _)| lines[*i].trim_start().starts_with("- "))
            .ok_or_else(|| anyhow!("the first container's env is not a block sequence"))?;
        // After the env list's last content line, so trailing comments stay where they are.
        let last = (env_start..env_end).rev().find(|&i| content(lines[i])).unwrap_or(env);
        inserts.push((last + 1, env_col));
    }
    let value = serde_json::to_string(value)?;
    let mut out = String::with_capacity(manifest.len() + 128);
    for (i, l) in lines.iter().enumerate() {
        for (at, col) in &inserts {
            if *at == i {
                out.push_str(&format!("{:col$}- name: {name}\n{:col$}  value: {value}\n", "", ""));
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    for (at, col) in &inserts {
        if *at == lines.len() {
            out.push_str(&format!("{:col$}- name: {name}\n{:col$}  value: {value}\n", "", ""));
        }
    }
    Ok(out)
}

/// Whether a manifest still holds a template action: applying it would hand the literal
/// placeholder to the cluster (kindnetd then crash-loops on `{{ .PodSubnet }}`).
pub fn unfilled(manifest: &str) -> bool {
    manifest.contains("{{")
}

pub fn bridge_conflist(subnet: &str) -> Result<String> {
    #[derive(Serialize)]
    struct Vars<'a> {
        subnet: &'a str,
    }
    Ok(crate::templates::render(BRIDGE_TEMPLATE, &Vars { subnet })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_conflist_is_json_with_the_subnet() {
        let conf: serde_json::Value =
            serde_json::from_str(&bridge_conflist("10.244.0.0/24").unwrap()).unwrap();
        let plugins = conf["plugins"].as_array().unwrap();
        assert_eq!(plugins[0]["type"], "bridge");
        assert_eq!(plugins[0]["ipam"]["ranges"][0][0]["subnet"], "10.244.0.0/24");
        assert!(plugins.iter().any(|p| p["type"] == "loopback"));
    }

    const KIND_STYLE: &str = r#"# would you kindly template this file
# would you kindly patch this file
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: x
data:
  env: |
    - name: NOT_THIS
---
apiVersion: apps/v1
kind: DaemonSet
spec:
  template:
    spec:
      containers:
      - name: a
        image: a
        env:
        - name: POD_SUBNET
          value: {{ .PodSubnet }}
        # a comment
        volumeMounts: []
      - name: b
        env:
        - name: B
"#;

    #[test]
    fn kind_style_templating_fills_and_patches_the_first_container() {
        let out = kind_template(KIND_STYLE, "10.244.0.0/16", "172.18.0.2:6443").unwrap();
        assert!(!unfilled(&out), "{out}");
        let expected = r#"        env:
        - name: POD_SUBNET
          value: 10.244.0.0/16
        - name: CONTROL_PLANE_ENDPOINT
          value: "172.18.0.2:6443"
        # a comment
"#;
        assert!(out.contains(expected), "{out}");
        assert_eq!(out.matches("CONTROL_PLANE_ENDPOINT").count(), 1, "only the first container: {out}");
    }

    #[test]
    fn without_markers_the_manifest_is_applied_as_is() {
        let plain =
            KIND_STYLE.replace("# would you kindly template this file\n", "").replace(PATCH_MARKER, "");
        assert_eq!(kind_template(&plain, "10.244.0.0/16", "172.18.0.2:6443").unwrap(), plain);
        assert!(unfilled(&plain), "kind would apply the placeholder as it is");
        // The template marker alone: filled, not patched.
        let templated = KIND_STYLE.replace(PATCH_MARKER, "");
        let out = kind_template(&templated, "10.244.0.0/16", "ep").unwrap();
        assert!(!unfilled(&out) && !out.contains("CONTROL_PLANE_ENDPOINT"), "{out}");
    }

    #[test]
    fn go_template_trims_and_refuses_what_kind_cannot_fill() {
        assert_eq!(go_template("a: {{- .PodSubnet -}} \nb", "s").unwrap(), "a:sb");
        assert_eq!(go_template("a{{/* c */}}b{{.PodSubnet}}", "s").unwrap(), "abs");
        assert!(go_template("{{ .ServiceSubnet }}", "s").unwrap_err().to_string().contains("ServiceSubnet"));
        assert!(go_template("x {{ .PodSubnet", "s").unwrap_err().to_string().contains("unclosed"));
    }

    #[test]
    fn patch_needs_an_env_list_like_kinds_json_patch() {
        let m = "# would you kindly patch this file\napiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      containers:\n        - name: a\n          image: a\n";
        assert!(kind_template(m, "s", "ep").unwrap_err().chain().any(|e| e.to_string().contains("no env")));
    }
}
