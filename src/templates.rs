//! The files under `templates/` are rendered with handlebars in one way: strict (a missing
//! variable is an error, not an empty string) and without HTML escaping (they are YAML,
//! TOML and JSON).

use handlebars::Handlebars;
use serde::Serialize;

pub fn render(template: &str, vars: &impl Serialize) -> Result<String, handlebars::RenderError> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.render_template(template, vars)
}

#[cfg(test)]
mod tests {
    #[test]
    fn strict_and_unescaped() {
        let vars = serde_json::json!({ "a": "x<y>&\"z\"" });
        assert_eq!(super::render("v: {{a}}", &vars).unwrap(), "v: x<y>&\"z\"");
        assert!(super::render("{{missing}}", &vars).is_err());
    }
}
