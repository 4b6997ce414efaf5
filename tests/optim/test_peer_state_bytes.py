"""The state of Muon, GaLore, Adam-mini, APOLLO and APOLLO-Mini on the LLaMA-60M shapes (meta device, nothing
allocated): the count written out from the model's dimensions equals what the optimizers declare
(``template_bytes``) and what they hold after a step (``state_bytes``); docs/benchmarks.md prints the table."""

from __future__ import annotations

from tests.optim import peer_state_bytes


def test_analytic_count_equals_template_and_measured_bytes_on_llama_60m():
    rows = peer_state_bytes.rows()
    assert [r.name for r in rows] == list(peer_state_bytes.PEERS)
    for r in rows:
        assert r.analytic == r.template == r.measured, r
    by_name = {r.name: r for r in rows}
    # what each method is for: less state than AdamW, APOLLO-Mini least
    assert by_name["apollo_mini"].measured < by_name["apollo"].measured < by_name["galore"].measured
    assert max(r.percent_of_adamw for r in rows if r.name != "adamw") < 100.0
