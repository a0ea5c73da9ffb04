"""Validates answers with hl7apy in strict mode against the ACK message structure, as a
strict partner would read an answer (tests/strict_answers.rs):

    python strict_ack.py DIR

DIR holds one answer a file (ER7, CR after each segment). For each, in name order, prints
one JSON line: {"name": FILE, "errors": [TEXT, ...]}, the errors empty when hl7apy takes it.
Whatever MSH-9 says, the answer is read as the ACK structure of its MSH-12 version (2.3
when it has none hl7apy knows): MSH, MSA, optional ERR.
"""

import json
import os
import sys

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import get_message_info, parse_segments
from hl7apy.validation import Validator

SUPPORTED = ("2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8", "2.8.1", "2.8.2")


def errors_of(text):
    """hl7apy's objections to `text` read strictly as an ACK."""
    try:
        encoding_chars, _, version = get_message_info(text)
        if version not in SUPPORTED:
            return [f"MSH-12 {version!r} is not a version hl7apy knows"]
        message = Message("ACK", version=version, validation_level=VALIDATION_LEVEL.STRICT,
                          encoding_chars=encoding_chars)
        message.children = parse_segments(text, version, encoding_chars,
                                          VALIDATION_LEVEL.STRICT, message.reference, True)
        Validator.validate(message)
    except HL7apyException as e:
        # A ValidationError lists every finding; others name one.
        found = getattr(e, "message", None) or str(e)
        return [str(f) for f in found] if isinstance(found, list) else [str(found)]
    except Exception as e:  # noqa: BLE001 - any failure to read it is a finding
        return [f"{type(e).__name__}: {e}"]
    return []


def main():
    folder = sys.argv[1]
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            text = f.read().decode("iso-8859-1")
        print(json.dumps({"name": name, "errors": errors_of(text)}), flush=True)


if __name__ == "__main__":
    main()
