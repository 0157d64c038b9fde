import pytest
import torch
import torch.nn.functional as F

from vldistill.distill.mad import (
    AdaptiveLambda,
    DistillTargets,
    MadConfig,
    StudentStates,
    distillation_loss,
    method_config,
    resample_grid,
    resample_sequence,
    salience,
    select_tokens,
    token_loss,
    token_weights,
)


def batch(seed=0, b=4, dv=12, dt=10, d_grid=(4, 4), s_grid=(8, 8), lt=7, ls=9):
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.zeros(b, lt, dtype=torch.bool)
    student_mask = torch.zeros(b, ls, dtype=torch.bool)
    for i in range(b):
        text_mask[i, : 3 + i] = True
        student_mask[i, : 4 + i] = True
    teacher = DistillTargets(
        vision_global=torch.randn(b, dv, generator=g),
        vision_tokens=torch.randn(b, d_grid[0] * d_grid[1], dv, generator=g),
        vision_grid=d_grid,
        text_global=torch.randn(b, dt, generator=g),
        text_tokens=torch.randn(b, lt, dt, generator=g),
        text_mask=text_mask,
    )
    student = StudentStates(
        vision_tokens=torch.randn(b, s_grid[0] * s_grid[1], dv, generator=g, requires_grad=True),
        vision_grid=s_grid,
        vision_global=torch.randn(b, dv, generator=g, requires_grad=True),
        text_tokens=torch.randn(b, ls, dt, generator=g, requires_grad=True),
        text_mask=student_mask,
        text_global=torch.randn(b, dt, generator=g, requires_grad=True),
    )
    return student, teacher


def test_salience_is_a_softmax_over_real_tokens_led_by_the_most_aligned():
    g = torch.tensor([[1.0, 0.0]])
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.1]]])
    mask = torch.tensor([[True, True, True, False]])
    a = salience(g, tokens, mask, tau=0.5)
    assert a[0, 3] == 0 and torch.isclose(a.sum(), torch.tensor(1.0))
    expected = torch.softmax(torch.tensor([1.0, 0.0, -1.0]) / 0.5, dim=0)
    assert torch.allclose(a[0, :3], expected)


def test_selected_tokens_are_the_top_ratio_by_salience_among_real_tokens():
    scores = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.3, 0.0], [0.4, 0.3, 0.9, 0.8, 0.0, 0.0]])
    mask = torch.tensor([[True] * 5 + [False], [True, True, True, False, False, False]])
    keep = select_tokens(scores, mask, ratio=0.5)
    # row 0: ceil(0.5 * 5) = 3 of the real tokens -> 0.9, 0.5, 0.3; row 1: ceil(1.5) = 2 -> 0.9, 0.4
    assert keep[0].tolist() == [False, True, False, True, True, False]
    assert keep[1].tolist() == [True, False, True, False, False, False]
    assert select_tokens(scores, mask, ratio=1.0).equal(mask)


def test_without_token_selection_every_real_token_counts_uniformly():
    _, teacher = batch()
    cfg = method_config("kd")
    weights = token_weights(cfg, teacher.text_global, teacher.text_tokens, teacher.text_mask)
    assert weights.equal(teacher.text_mask.float())
    with_ts = token_weights(method_config("mad"), teacher.text_global, teacher.text_tokens,
                            teacher.text_mask)
    assert ((with_ts > 0).sum(dim=1) < teacher.text_mask.sum(dim=1)).all()


def test_student_grid_is_average_pooled_onto_the_teacher_grid():
    tokens = torch.arange(64, dtype=torch.float32).reshape(1, 64, 1)
    pooled = resample_grid(tokens, (8, 8), (4, 4))
    image = tokens.reshape(1, 1, 8, 8)
    assert torch.equal(pooled.reshape(1, 1, 4, 4), F.avg_pool2d(image, 2))
    assert resample_grid(tokens, (8, 8), (8, 8)) is tokens
    assert resample_grid(tokens[:, :4], (2, 2), (4, 4)).shape == (1, 16, 1)
    with pytest.raises(ValueError, match="grid"):
        resample_grid(tokens, (4, 4), (2, 2))


def test_text_states_map_by_relative_position_and_ends_meet():
    tokens = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1)
    student_mask = torch.tensor([[True] * 6 + [False] * 2])
    teacher_mask = torch.tensor([[True] * 3 + [False]])
    out = resample_sequence(tokens, student_mask, teacher_mask)
    assert out[0, :3, 0].tolist() == [0.0, 2.0, 4.0]
    teacher_mask = torch.tensor([[True] * 6])
    assert resample_sequence(tokens, student_mask, teacher_mask)[0, :, 0].tolist() == [
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_token_loss_is_the_weighted_cosine_distance():
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    student = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # distances 0 and 1
    assert token_loss(student, teacher, torch.tensor([[1.0, 3.0]])).item() == pytest.approx(0.75)
    assert token_loss(student, teacher, torch.zeros(1, 2)).item() == 0.0
    assert token_loss(teacher, teacher, torch.ones(1, 2)).item() == pytest.approx(0.0, abs=1e-6)


def test_a_zero_confidence_example_contributes_no_distillation_loss():
    student, teacher = batch()
    p_gold = torch.tensor([0.9, 0.0, 0.5, 0.7])
    out = distillation_loss(method_config("mad"), student, teacher, p_gold)
    out["loss"].backward()
    for tensor in (student.vision_tokens, student.text_tokens, student.vision_global):
        assert torch.count_nonzero(tensor.grad[1]) == 0
        assert torch.count_nonzero(tensor.grad[0]) > 0
    assert out["weights"].mean().item() == pytest.approx(1.0)


def test_mad_without_cw_equals_mad_with_unit_weights():
    student, teacher = batch(seed=3)
    p_gold = torch.tensor([0.2, 0.9, 0.4, 0.6])
    no_cw = distillation_loss(method_config("mad-cw"), student, teacher, p_gold)["loss"]
    unit = distillation_loss(method_config("mad"), student, teacher, torch.ones(4))["loss"]
    weighted = distillation_loss(method_config("mad"), student, teacher, p_gold)["loss"]
    assert torch.allclose(no_cw, unit)
    assert not torch.allclose(no_cw, weighted)


def test_adaptive_lambda_decays_once_the_student_beats_the_teacher_probe():
    cfg = MadConfig(lambda0=2.0, ema=0.0)
    schedule = AdaptiveLambda(cfg, teacher_loss=0.5)
    assert schedule.value == 2.0  # before the first update: full strength
    assert schedule.update(1.0, step=0) == 2.0  # student worse than the teacher: full strength
    assert schedule.update(0.25, step=10) == pytest.approx(1.0)  # half the probe's loss: half
    assert schedule.value == pytest.approx(1.0)  # held between updates
    assert [u["step"] for u in schedule.updates] == [0, 10]
    constant = AdaptiveLambda(method_config("mad-af", lambda0=2.0), teacher_loss=None)
    assert constant.update(0.01, step=0) == 2.0 and not constant.due(0)
    with pytest.raises(ValueError, match="teacher probe"):
        AdaptiveLambda(cfg, teacher_loss=None)


def test_adaptive_lambda_moves_as_a_falling_held_out_loss_crosses_the_probe():
    cfg = MadConfig(lambda0=1.0, ema=0.5, af_every=5)
    schedule = AdaptiveLambda(cfg, teacher_loss=1.0)
    assert [schedule.due(s) for s in range(11)] == [s % 5 == 0 for s in range(11)]
    lambdas = [schedule.update(loss, step=5 * k)
               for k, loss in enumerate([1.6, 1.2, 0.8, 0.4, 0.2, 0.1])]
    assert lambdas[:2] == [1.0, 1.0]  # smoothed 1.6, 1.4: above the probe
    assert lambdas[2] == 1.0  # smoothed 1.1
    assert lambdas[3] == pytest.approx(0.75)  # smoothed 0.75
    assert all(b < a for a, b in zip(lambdas[3:], lambdas[4:], strict=False))
    assert lambdas[-1] == pytest.approx(0.2875)


def test_adaptive_lambda_state_round_trips():
    cfg = MadConfig(ema=0.5)
    first = AdaptiveLambda(cfg, teacher_loss=1.0)
    first.update(0.8, step=0)
    second = AdaptiveLambda(cfg, teacher_loss=1.0)
    second.load_state_dict(first.state_dict())
    assert second.value == first.value and second.updates == first.updates
    assert first.update(0.4, step=10) == second.update(0.4, step=10)


def fused_states(student, teacher, seed=1):
    g = torch.Generator().manual_seed(seed)
    b, ls = student.text_tokens.shape[:2]
    dv, dt = teacher.vision_global.shape[1], teacher.text_global.shape[1]
    student.fused_text_tokens = torch.randn(b, ls, dt, generator=g, requires_grad=True)
    student.fused_global = torch.randn(b, dv + dt, generator=g, requires_grad=True)
    return student


def test_fused_targets_add_their_terms_and_reach_the_fused_states():
    student, teacher = batch()
    student = fused_states(student, teacher)
    none = distillation_loss(method_config("mad"), student, teacher)
    assert none["fused"] == 0
    parts = {f: distillation_loss(method_config("mad", fused=f), student, teacher)
             for f in ("tokens", "pooled", "both")}
    for f, out in parts.items():
        assert out["fused"] > 0 and torch.isclose(out["loss"], none["loss"] + out["fused"]), f
    assert torch.isclose(parts["both"]["fused"],
                         parts["tokens"]["fused"] + parts["pooled"]["fused"])
    parts["both"]["loss"].backward()
    assert student.fused_text_tokens.grad.abs().sum() > 0
    assert student.fused_global.grad.abs().sum() > 0


def test_fused_pooled_target_is_zero_when_it_points_along_both_unit_globals():
    student, teacher = batch()
    target = torch.cat([F.normalize(teacher.vision_global, dim=-1),
                        F.normalize(teacher.text_global, dim=-1)], dim=-1)
    student.fused_global = 3 * target
    out = distillation_loss(method_config("mad", fused="pooled"), student, teacher)
    assert out["fused"].abs() < 1e-6


def test_a_fused_target_without_fused_states_is_refused():
    student, teacher = batch()
    with pytest.raises(ValueError, match="fused"):
        distillation_loss(method_config("mad", fused="tokens"), student, teacher)
    with pytest.raises(ValueError, match="fused must be one of"):
        MadConfig(fused="all")


def test_methods():
    assert method_config("baseline") is None
    assert method_config("mad-ts").token_selection is False
    assert method_config("mad-af").adaptive is False
    with pytest.raises(ValueError, match="unknown method"):
        method_config("mad-xx")
    with pytest.raises(ValueError, match="token_ratio"):
        MadConfig(token_ratio=0.0)
