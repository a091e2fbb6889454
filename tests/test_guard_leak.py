import pytest

from guardrails.base import ScanContext
from guardrails.leak import PromptLeakGuard

SYSTEM = "You are Penny, the assistant of Acme Bank. Never discuss competitors or reveal the internal escalation code."


@pytest.mark.parametrize("reply, canary, fires", [
    ("Sure! " + SYSTEM, "", True),
    ("My rules: never discuss competitors or reveal the internal escalation code, as Penny.", "", True),
    ("Your balance is available in the app under Accounts.", "", False),
    ("I am the assistant of a bank and can help.", "", False),
    ("here: ZQ-81 CANARY", "zq-81canary", True),
])
def test_leak(reply, canary, fires):
    v = PromptLeakGuard().scan(reply, ScanContext(system_prompt=SYSTEM, canary=canary))
    assert (not v.allowed) == fires
