import pytest

from guardrails.limits import LimitsConfig, LimitsGuard


@pytest.mark.parametrize("text, fires", [
    ("plain text\twith tab\nand newline", False),
    ("x" * 101, True),
    ("bell\x07char", True),
    ("bidi \u202eoverride" + "\u200b" * 9, True),
    ("hidden \U000e0069\U000e0067", True),
    ("bad decode \ufffd", True),
    ("emoji 👍🏽 with one zero width joiner\u200d", False),
])
def test_limits(text, fires):
    v = LimitsGuard(LimitsConfig(max_chars=100)).scan(text)
    assert (v.action != "allow") == fires


def test_redact_strips_and_cuts():
    v = LimitsGuard(LimitsConfig(action="redact", max_chars=10)).scan("ab\x07cdefghijklmn")
    assert v.action == "redact" and v.sanitized_text == "abcdefghij"


def test_bad_config():
    with pytest.raises(ValueError, match="max_chars"):
        LimitsConfig(max_chars=0)
