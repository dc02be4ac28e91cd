"""Validates JSON files against a JSON Schema (draft 2020-12) with the
third-party `jsonschema` package, formats checked.

argv: SCHEMA FILE...   Prints one line per FILE, in order:
  "valid FILE" or "invalid FILE: <the first error, with its JSON path>".
Exit 0 when every file was read (whatever the verdicts), 1 when the schema
itself is not a valid draft 2020-12 schema, 2 on usage or read errors.
"""
import json
import sys

import jsonschema
from jsonschema import Draft202012Validator


def main():
    if len(sys.argv) < 3:
        print("usage: schema_check.py SCHEMA FILE...", file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        print(f"schema error: {e.message}", file=sys.stderr)
        return 1
    validator = Draft202012Validator(
        schema, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    for path in sys.argv[2:]:
        with open(path, encoding="utf-8") as f:
            instance = json.load(f)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path)
            print(f"invalid {path}: at /{where}: {errors[0].message}")
        else:
            print(f"valid {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
