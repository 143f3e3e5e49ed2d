"""Equivalent mutants: changes no test can kill because no behaviour changes, each with the
reason. The harness leaves them out of the kill rates' denominators (and reports one that gets
killed anyway: then the reason is wrong, and the entry must go)."""

from __future__ import annotations

EQUIVALENT: dict[str, str] = {
    "batch-size-resized-without-a-run": (
        "a batch runs no job (ran == 0) only when the stop flag is already set: "
        "_run_one_by_one returns i == 0 and _run_whole_batch returns 0 only on a stop, and a "
        "step runs a batch only when it has jobs. Once stopping, SlotPlan.claim asks for 0 "
        "jobs, so the size this mutant resets to 1 is never used again."),
    "heartbeat-renewal-not-marked": (
        "Held.due is only called by heartbeat_loop, once per tick, and the ticks are Pause "
        "(interval) apart, measured after the renewal's mark was taken: a lease renewed at "
        "one tick is at least `interval` old at the next, so it is due again whether or not "
        "the renewal marked it. The mark could only exclude a lease if ticks came faster than "
        "`interval` (no caller does that)."),
}
