"""What integrated-gradient scores add up to is named: in the JSON, the table and the page."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bertfit.cli.main import main
from tests.test_cli import single_run  # noqa: F401  (the shared trained tiny run)


def _logits(run, text: str) -> torch.Tensor:
    packed = run.pack([text])
    ids = torch.tensor(packed.ids[: packed.offsets[1]], dtype=torch.long)[None]
    types = torch.tensor(packed.types[: packed.offsets[1]], dtype=torch.long)[None]
    with torch.no_grad():
        out = run.model.float()(
            input_ids=ids, token_type_ids=types, attention_mask=torch.ones_like(ids)
        )
    return out.logits[0]


@pytest.mark.slow
def test_the_json_names_the_logit_it_attributes(single_run):  # noqa: F811
    import bertfit

    run = bertfit.load(single_run["dir"], device="cpu")
    result = run.explain("the great movie with a long plot", steps=20)
    assert result["attribution_target"] == (
        "logit of the predicted class 'pos' relative to the all-[PAD] baseline"
    )
    assert result["target_output"] == "logit" and result["target_label"] == result["label"]
    assert result["baseline"] == "all-[PAD]"
    index = run.labels.index("pos")
    assert result["output"] == pytest.approx(float(_logits(run, result["text"])[index]), abs=1e-4)
    gap = result["output"] - result["baseline_output"]
    assert result["output_difference"] == pytest.approx(gap)


def test_the_log_probability_target_adds_up_to_the_log_probability(single_run):  # noqa: F811
    import bertfit
    from bertfit.errors import ModelError
    from bertfit.inference.explain import explain

    run = bertfit.load(single_run["dir"], device="cpu")
    result = explain(run, "the great movie with a long plot", steps=50, target="log-probability")
    assert result["attribution_target"].startswith("log-probability of the predicted class 'pos'")
    assert result["output"] == pytest.approx(math.log(result["probabilities"]["pos"]), abs=1e-4)
    gap, total = result["output_difference"], result["attribution_sum"]
    assert abs(total - gap) <= 0.05 * abs(gap) + 1e-4
    with pytest.raises(ModelError, match="target must be one of logit, log-probability"):
        explain(run, "x", target="probability")


def test_the_table_and_the_page_say_what_the_scores_sum_to(single_run, tmp_path, capsys):  # noqa: F811
    args = ["explain", str(single_run["dir"]), "--text", "great scene", "--steps", "10"]
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("word "))
    assert "(logit of the predicted class 'pos' relative to the all-[PAD] baseline)" in header
    last = out.strip().splitlines()[-1]
    assert "integrated gradients sum to" in last and "the logit of 'pos' moved" in last
    assert "from the all-[PAD] baseline" in last and "a logit, not a probability" in last
    page = tmp_path / "why.html"
    assert main([*args, "--output", str(page), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    html = page.read_text()
    assert "Integrated gradients of the logit of &quot;pos&quot;" in html
    assert "The word scores add up to the logit of the predicted class &#x27;pos&#x27;" in html
    assert f"{result['output_difference']:+.4f}" in html and "not a probability" in html
