"""Runs the standards' official validators on one document from stdin.

    check.py stix   a STIX 2.1 bundle: the OASIS stix2-validator (errors and
                    warnings, every check on) and the OASIS stix2 library's
                    parser (no custom content allowed)
    check.py xarf   an X-ARF v4 notice or a JSON array of them: the xarf
                    package's parser and the official X-ARF v4 JSON schemas
                    it ships (with their formats checked)

    check.py batch  a JSON array of {"kind": "stix"|"xarf", "doc": ...}: each
                    checked as above, in one run (the validators take
                    seconds to load)

Prints one JSON object, {"errors": [...], "warnings": [...]} (for batch, a
JSON array of them, in order), and exits 0; exits 2 when a validator is
missing. .ci/run installs them into a virtual
environment (ALERTRELAY_VALIDATORS); the tests run this file with its
Python (tests/common/validators.rs).
"""

import json
import sys


def check_stix(text):
    import stix2
    import stix2validator

    options = stix2validator.ValidationOptions(version="2.1")
    results = stix2validator.validate_string(text, options)
    errors = [str(e) for e in results.errors]
    warnings = [str(w) for w in results.warnings]
    if results.is_valid is not True and not errors:
        errors.append("stix2-validator: not valid")
    try:
        bundle = stix2.parse(text, allow_custom=False)
        if bundle.type != "bundle":
            errors.append("stix2: not a bundle: " + bundle.type)
    except Exception as e:  # the library's own errors are many kinds
        errors.append("stix2.parse: %s: %s" % (type(e).__name__, e))
    return errors, warnings


def check_xarf(text):
    import xarf

    doc = json.loads(text)
    notices = doc if isinstance(doc, list) else [doc]
    errors, warnings = [], []
    for i, notice in enumerate(notices):
        result = xarf.parse(notice)
        errors += ["notice %d: %s: %s" % (i, e.field, e.message) for e in result.errors]
        warnings += ["notice %d: %s" % (i, w) for w in result.warnings]
        if result.report is None:
            errors.append("notice %d: xarf.parse built no report" % i)
    return errors, warnings


CHECKS = {"stix": check_stix, "xarf": check_xarf}


def verdict(kind, text):
    errors, warnings = CHECKS[kind](text)
    return {"errors": errors, "warnings": warnings}


def main():
    kind = sys.argv[1] if len(sys.argv) > 1 else ""
    if kind not in CHECKS and kind != "batch":
        print("usage: check.py stix|xarf|batch < document", file=sys.stderr)
        return 64
    text = sys.stdin.read()
    try:
        if kind == "batch":
            out = [verdict(item["kind"], json.dumps(item["doc"])) for item in json.loads(text)]
        else:
            out = verdict(kind, text)
    except ImportError as e:
        print("validator missing: %s" % e, file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
