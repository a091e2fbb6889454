import pytest

from guardrails.secrets import SecretsConfig, SecretsGuard, entropy

G = SecretsGuard()


@pytest.mark.parametrize("text, kind", [
    ("aws AKIAIOSFODNN7EXAMPLE", "aws_access_key_id"),
    ("token ghp_" + "Ab1" * 12, "github_token"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "private_key"),
    ("OPENAI_API_KEY=sk-proj-" + "aB3dE" * 6, "openai_or_anthropic_key"),
    ("stripe sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "stripe_key"),
    ("db postgres://admin:hunter2pass@db.internal:5432/x", "url_password"),
    ("password: Tr0ub4dor&3", "password"),
    ("api_key = 'f9Kq2Lz8Xw1Vb7Nm'", "generic_secret"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "jwt"),
])
def test_secret_found_and_redacted(text, kind):
    v = G.scan(text)
    assert v.action == "redact" and kind in " ".join(v.reasons)
    assert f"<SECRET:{kind}>" in v.sanitized_text
    assert all(text[s.start:s.end] not in " ".join(v.reasons) for s in v.spans)


@pytest.mark.parametrize("text", [
    "How do I rotate my API keys safely?",
    "The password policy requires 12 characters.",
    "sha256 is 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "my api_key = changeme",
])
def test_no_false_alarm(text):
    assert G.scan(text).action == "allow"


def test_block_action_and_entropy():
    assert SecretsGuard(SecretsConfig(action="block")).scan("AKIAIOSFODNN7EXAMPLE").allowed is False
    assert entropy("aaaa") == 0 and entropy("abcd") == 2
