#!/usr/bin/env python3
"""Lists where the protobuf field names differ from the JSON names k8s-openapi uses.

protoc derives json_name from the field name, but go-to-protobuf named a few fields after the
Go field rather than its JSON tag (`Webhooks`, `uID`, `aPIGroup`), and Go structs embedded with
`json:",inline"` appear in protobuf as one nested field (`Volume.volumeSource`). src/schema.rs
carries both lists by hand (RENAMED_FIELDS, INLINE_FIELDS); run this after regenerating
data/kubernetes-1.32.fds and make those tables match its output.

Usage: tools/check_json_names.py data/kubernetes-1.32.fds ~/.cargo/registry/src/*/k8s-openapi-0.27.1/src/v1_32
Only the standard library is used.
"""
import glob
import re
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from extract_descriptors import top_fields  # noqa: E402


def messages(fds):
    out = {}

    def walk(buf, prefix):
        fields = top_fields(buf)
        name = prefix + "." + [v for n, v in fields if n == 1][0].decode()
        out[name] = []
        for n, v in fields:
            if n == 2:
                f = dict(top_fields(v))
                out[name].append((f[1].decode(), f.get(6, b"").decode()))
            elif n == 3:
                walk(v, name)

    for n, file in top_fields(open(fds, "rb").read()):
        fields = top_fields(file)
        package = [v for k, v in fields if k == 2][0].decode()
        for k, v in fields:
            if k == 4:
                walk(v, "." + package)
    return out


def openapi_keys(src):
    keys = {}
    for path in glob.glob(src + "/**/*.rs", recursive=True):
        text = open(path).read()
        m = re.match(r"// Generated from definition io\.k8s\.(\S+)", text)
        if m:
            keys[".k8s.io." + m.group(1)] = set(re.findall(r'"([^"]+)" => Field::Key_', text))
    return keys


def main():
    protos = messages(sys.argv[1])
    keys = openapi_keys(sys.argv[2])
    for name, fields in sorted(protos.items()):
        if name not in keys:
            continue
        json = keys[name]
        for field, type_name in fields:
            if field in json:
                continue
            lowered = [k for k in json if k.lower() == field.lower()]
            if lowered:
                print("rename %s.%s -> %s" % (name, field, lowered[0]))
            elif type_name and set(f for f, _ in protos.get(type_name, [])) & json:
                print("inline %s.%s (%s)" % (name, field, type_name))
            else:
                print("unmatched %s.%s" % (name, field))


if __name__ == "__main__":
    main()
