"""End-to-end polish of a layer-by-layer clone: improvement, roll-back, checkpoint and resume."""
import dataclasses
import json

import pytest
import torch

from symclone.distill import distill
from symclone.registry import create_student, create_teacher

from _distill_helpers import fast  # noqa: E402


def _polish_cfg(**kw):
    return fast(solver="adam", steps=60, lr=1e-2, n_train=128, polish_steps=40, checkpoint_every=15, **kw)


def test_polish_lowers_feature_error_and_refreshes_metrics():
    t = create_teacher("cnn", channels=1, depth=2, size=5)
    torch.manual_seed(0)
    plain = distill(create_student("mlp", teacher=t), t, None, dataclasses.replace(_polish_cfg(), polish_steps=0))
    torch.manual_seed(0)
    m = distill(create_student("mlp", teacher=t), t, None, _polish_cfg())
    p = m["polish"]
    assert p["steps"] == 40 and not p["reverted"] and p["objective_after"] < p["objective_before"]
    for r0, r in zip(plain["layers"], m["layers"]):
        before = p["feature_rel_error_before"][str(r["layer"])]
        assert before == r0["feature_rel_error"]  # the layer-wise clone, as without polish
        assert r["feature_rel_error"] < before  # re-evaluated after the polish ...
        assert p["feature_rel_error_after"][str(r["layer"])] == r["feature_rel_error"]
        assert r["equivariance_error"]["student"] != r0["equivariance_error"]["student"]  # ... all metrics
    # an exact closed-form clone is only perturbed by Adam: the polish is rolled back, errors unchanged
    torch.manual_seed(0)
    exact = distill(create_student("mlp", teacher=t), t, None, fast(n_train=128, polish_steps=20))
    assert exact["polish"]["reverted"] and exact["polish"]["objective_polished"] > exact["polish"]["objective_before"]
    for r in exact["layers"]:
        assert r["feature_rel_error"] == exact["polish"]["feature_rel_error_before"][str(r["layer"])] < 1e-5


def test_polish_resume_after_finish_does_not_polish_again_and_mid_polish_resume_matches(tmp_path, monkeypatch):
    import symclone.distill._engine as eng
    import symclone.distill._polish as pol
    t = create_teacher("cnn", channels=1, depth=2, size=5)
    torch.manual_seed(0)
    ref = create_student("mlp", teacher=t)
    m = distill(ref, t, None, _polish_cfg(), out=tmp_path / "a")
    state = json.loads((tmp_path / "a/checkpoints/last.json").read_text())
    assert state["polish"]["steps"] == 40 and "current" not in state  # checkpoint at the end of the polish

    def no_polish(*a, **kw):
        raise AssertionError("polished again")
    monkeypatch.setattr(eng, "polish", no_polish)
    again = create_student("mlp", teacher=t)
    m2 = distill(again, t, None, _polish_cfg(), out=tmp_path / "a", resume=True)
    assert m2["polish"] == m["polish"] and m2["layers"] == m["layers"]
    for p, q in zip(ref.parameters(), again.parameters()):
        assert torch.equal(p, q)
    monkeypatch.setattr(eng, "polish", pol.polish)

    # interrupted at polish step 20 (checkpoint at 15): resume continues the polish from step 15
    orig = pol.train_steps

    def interrupting(params, loss_fn, *a, **kw):
        def loss(step):
            if step == 20:
                raise KeyboardInterrupt
            return loss_fn(step)
        return orig(params, loss, *a, **kw)
    monkeypatch.setattr(pol, "train_steps", interrupting)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        distill(create_student("mlp", teacher=t), t, None, _polish_cfg(), out=tmp_path / "b")
    cur = json.loads((tmp_path / "b/checkpoints/last.json").read_text())["current"]
    assert cur["phase"] == "polish" and cur["step"] == 15
    monkeypatch.setattr(pol, "train_steps", orig)
    s = create_student("mlp", teacher=t)
    m3 = distill(s, t, None, _polish_cfg(), out=tmp_path / "b", resume=True)
    assert m3["polish"]["objective_before"] == m["polish"]["objective_before"]
    assert [c[0] for c in m3["polish"]["loss_curve"]] == [c[0] for c in m["polish"]["loss_curve"]]
    for p, q in zip(ref.parameters(), s.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
