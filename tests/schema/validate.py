#!/usr/bin/env python3
"""Validates tokend configuration files against the JSON Schema, as an editor would.

Usage: validate.py SCHEMA FILE...; prints `valid FILE` or `invalid FILE: why` for each, one a
line. YAML is read as serde_yaml (YAML 1.2's core schema) and an editor's YAML language server
read it, not as PyYAML's YAML 1.1 default: `0640` and `yes` are strings, `0o640` a number; and a
mapping key is the text as written (`0x1F:` is "0x1F"), as tokend names its clients.
"""
import json
import re
import sys

import jsonschema
import yaml


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars."""


Yaml12Loader.yaml_implicit_resolvers = {}
for tag, pattern, first in [
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", list("~nN") + [""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+.0123456789"),
    ),
]:
    Yaml12Loader.add_implicit_resolver(tag, re.compile(pattern), first)


def construct_int(loader, node):
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 0 if text.startswith("0x") else 10)


def construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    result = {}
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            key = key_node.value
        else:
            key = json.dumps(loader.construct_object(key_node, deep=True))
        result[key] = loader.construct_object(value_node, deep=deep)
    return result


Yaml12Loader.add_constructor("tag:yaml.org,2002:int", construct_int)
Yaml12Loader.add_constructor("tag:yaml.org,2002:map", construct_mapping)


def main():
    with open(sys.argv[1]) as f:
        schema = json.load(f)
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for path in sys.argv[2:]:
        try:
            with open(path) as f:
                document = yaml.load(f, Loader=Yaml12Loader)
        except yaml.YAMLError as e:
            print(f"invalid {path}: not YAML: {' '.join(str(e).split())}")
            continue
        # An empty file is an empty configuration, as tokend reads it.
        document = {} if document is None else document
        error = jsonschema.exceptions.best_match(validator.iter_errors(document))
        if error is None:
            print(f"valid {path}")
        else:
            where = "/".join(str(p) for p in error.absolute_path) or "(top)"
            print(f"invalid {path}: {where}: {' '.join(error.message.split())}")


if __name__ == "__main__":
    main()
