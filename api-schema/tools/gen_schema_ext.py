#!/usr/bin/env python3
"""Generates api-schema/src/schema_ext_table.rs: the Kubernetes OpenAPI extensions that
k8s-openapi's schemars output lacks (x-kubernetes-patch-strategy, -patch-merge-key,
-list-type, -list-map-keys, -map-type).

Source of truth: the `+patchStrategy=`, `+patchMergeKey=`, `+listType=`, `+listMapKey=`,
`+mapType=` and `+structType=` markers of the upstream Go types. kube-openapi's openapi-gen turns
exactly these markers into the extensions of the published swagger; go-to-protobuf copies them
into each group's generated.proto, and the k8s-pb crate keeps those comments as doc comments.
The markers are joined with the definitions and property names k8s-openapi (feature v1_32)
generates, so fields that do not exist in 1.32 drop out.

There is no k8s-pb release for 1.32, so the markers of the releases for 1.31 (k8s-pb 0.6.0) and
1.33 (k8s-pb 0.7.0) are united; the script fails if the two disagree on a field 1.32 has.

Usage (after `cargo info k8s-pb@0.6.0` and `cargo info k8s-pb@0.7.0` unpacked them):
  R=~/.cargo/registry/src/index.crates.io-*
  python3 tools/gen_schema_ext.py $R/k8s-pb-0.6.0/src $R/k8s-pb-0.7.0/src \
      $R/k8s-openapi-0.27.1/src/v1_32 > src/schema_ext_table.rs
"""
import os
import re
import subprocess
import sys

pb_roots, oa_root = sys.argv[1:-1], sys.argv[-1]


def norm(s):
    return s.replace("_", "").replace("-", "").lower()


# Go types inlined into another: their fields belong to the outer definition.
INLINED = {"ephemeralcontainercommon": "ephemeralcontainer"}
MARKERS = ("patchStrategy", "patchMergeKey", "listType", "listMapKey", "mapType")

# --- k8s-openapi: definition name -> {normalized property -> property}
defs = {}
for dirpath, _, files in os.walk(oa_root):
    for f in files:
        if not f.endswith(".rs"):
            continue
        text = open(os.path.join(dirpath, f), encoding="utf-8").read()
        for m in re.finditer(r'fn schema_name\(\) -> std::borrow::Cow<\'static, str> \{\s*"([^"]+)"\.into\(\)', text):
            rest = text[m.end():]
            pm = re.search(r'\n {12}"properties": \{\n(.*?)\n {12}\},?\n', rest, re.S)
            props = {}
            if pm and "fn schema_name" not in rest[: pm.start()]:
                for pl in re.finditer(r'^ {16}"([^"]+)": ', pm.group(1), re.M):
                    props[norm(pl.group(1))] = pl.group(1)
            defs[m.group(1)] = props

# k8s-openapi has one generic List<T> instead of a definition per list kind; upstream has
# `<Kind>List` definitions whose `items` may carry markers (StorageVersionMigrationList does).
for name in list(defs):
    if name + "List" not in defs:
        defs[name + "List"] = {"apiversion": "apiVersion", "items": "items", "kind": "kind", "metadata": "metadata"}

by_norm = {}
for name in defs:
    pkg, _, kind = name.rpartition(".")
    by_norm[(pkg, kind.lower())] = name

field_ext = {}  # (definition, property) -> {marker: [values]}
type_ext = {}   # definition -> map type
seen = {}       # (definition, property) -> root that defined it


def record(key, ext, root):
    old = field_ext.get(key)
    if old is not None and old != ext:
        sys.exit("markers disagree on %s.%s: %s (%s) vs %s (%s)" % (key + (old, seen[key], ext, root)))
    field_ext[key] = ext
    seen[key] = root


def walk_pb(root):
    for dirpath, _, files in os.walk(root):
        if "mod.rs" not in files:
            continue
        rel = os.path.relpath(dirpath, root).replace(os.sep, ".")
        if rel.startswith("apimachinery.pkg.apis.testapigroup"):
            continue
        if rel.startswith("apiextensions_apiserver") or rel.startswith("kube_aggregator"):
            head, _, tail = rel.partition(".")
            rel = head.replace("_", "-") + "." + tail
        pkg = "io.k8s." + rel
        doc, struct = [], None
        for line in open(os.path.join(dirpath, "mod.rs"), encoding="utf-8"):
            s = line.strip()
            if s.startswith("///"):
                doc.append(s[3:].strip())
                continue
            if s.startswith("#[") or s.startswith("#!["):
                continue
            sm = re.match(r"pub struct (\w+) \{", s)
            if sm and not line.startswith(" "):
                k = sm.group(1).lower()
                struct = by_norm.get((pkg, INLINED.get(k, k)))
                if struct:
                    for d in doc:
                        mm = re.match(r"\+(mapType|structType)=(\w+)$", d)
                        if mm:
                            type_ext[struct] = mm.group(2)
                doc = []
                continue
            fm = re.match(r"pub (?:r#)?(\w+):", s)
            if fm and struct and line.startswith("    pub"):
                prop = defs[struct].get(norm(fm.group(1)))
                ext = {}
                for d in doc:
                    mm = re.match(r"\+(\w+)=(.*)$", d)
                    if mm and mm.group(1) in MARKERS:
                        ext.setdefault(mm.group(1), []).append(mm.group(2).strip())
                if prop:
                    if ext:
                        record((struct, prop), ext, root)
            if line.startswith("}"):
                struct = None
            doc = []


for r in pb_roots:
    walk_pb(r)


OUT = []


def emit(line=""):
    OUT.append(line)


def lit(v):
    return "None" if v is None else 'Some("%s")' % v


emit("// @generated by tools/gen_schema_ext.py from the upstream Go markers (via k8s-pb) joined")
emit("// with k8s-openapi v1_32's definitions. Do not edit by hand; see the script's docstring.")
emit()
emit("use crate::schema_ext::FieldExt;")
emit()
emit("/// Every field of a 1.32 definition that upstream marks with patch or list metadata.")
emit("pub(crate) static FIELD_EXTENSIONS: &[FieldExt] = &[")
for (d, p) in sorted(field_ext):
    e = field_ext[(d, p)]
    first = lambda k: e.get(k, [None])[0]
    emit("    FieldExt {")
    emit('        definition: "%s",' % d)
    emit('        property: "%s",' % p)
    emit("        patch_strategy: %s," % lit(first("patchStrategy")))
    emit("        patch_merge_key: %s," % lit(first("patchMergeKey")))
    emit("        list_type: %s," % lit(first("listType")))
    emit("        list_map_keys: &[%s]," % ", ".join('"%s"' % k for k in e.get("listMapKey", [])))
    emit("        map_type: %s," % lit(first("mapType")))
    emit("    },")
emit("];")
emit()
emit("/// Definitions upstream marks `+structType`/`+mapType` (`x-kubernetes-map-type`).")
emit("pub(crate) static TYPE_MAP_TYPES: &[(&str, &str)] = &[")
for d in sorted(type_ext):
    emit('    ("%s", "%s"),' % (d, type_ext[d]))
emit("];")


# rustfmt's layout, so that `cargo fmt -p api-schema` leaves the generated file alone.
text = "\n".join(OUT) + "\n"
try:
    text = subprocess.run(
        ["rustfmt", "--edition", "2021", "--emit", "stdout", "--quiet"],
        input=text, capture_output=True, text=True, check=True,
    ).stdout
except (OSError, subprocess.CalledProcessError) as e:
    sys.stderr.write("rustfmt unavailable (%s); run cargo fmt -p api-schema\n" % e)
sys.stdout.write(text)
