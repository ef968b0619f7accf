#!/usr/bin/env python3
"""Prints the top-level module graph of src/ (edges from `crate::x` paths) and fails if it has
a cycle, or an arrow that does not point to a lower layer of the map in src/lib.rs (its
numbered `//! N. `module`, ...` lines, top first). Used by CI: module arrows point down."""
import pathlib, re, sys

layers = {}
for line in pathlib.Path("src/lib.rs").read_text().splitlines():
    if m := re.match(r"//! (\d+)\. (.*?)(?: — |$)", line):
        for name in re.findall(r"`([a-z_]+)`", m.group(2)):
            layers[name] = int(m.group(1))

edges = {}
for path in pathlib.Path("src").rglob("*.rs"):
    rel = path.relative_to("src").parts
    if rel[0] in ("main.rs", "lib.rs"):
        continue
    module = rel[0].removesuffix(".rs")
    text = path.read_text()
    targets = set(re.findall(r"crate::([a-z_]+)", text))
    for group in re.findall(r"crate::\{([^}]*)\}", text):
        targets |= set(re.findall(r"\b([a-z_]+)\b", group))
    edges.setdefault(module, set()).update(t for t in targets if t != module)

def cycle():
    state = {}
    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack + [node, nxt]
            if state.get(nxt) is None and (found := visit(nxt, stack + [node])):
                return found
        state[node] = 2
        return None
    for node in sorted(edges):
        if state.get(node) is None and (found := visit(node, [])):
            return found
    return None

for module in sorted(edges):
    print(f"{module} -> {', '.join(sorted(edges[module])) or '-'}")
found = cycle()
if found:
    print("cycle:", " -> ".join(found[found.index(found[-1]):]))
    sys.exit(1)
print("no cycle")
bad = []
for module in sorted(edges):
    if module not in layers:
        bad.append(f"{module} is not in the map in src/lib.rs")
        continue
    for target in sorted(edges[module]):
        if target in layers and layers[target] <= layers[module]:
            bad.append(f"{module} (layer {layers[module]}) -> {target} (layer {layers[target]})")
if bad:
    print("arrows that do not point down:", *bad, sep="\n  ")
    sys.exit(1)
print(f"every arrow points down ({len(layers)} modules in {len(set(layers.values()))} layers)")
