"""META-STORM and STORM+: against the paper-literal reference, reductions, the closure contract, resume."""

from __future__ import annotations

import io
import math

import pytest
import torch
from tests.accelerated.reference_storm import storm_reference
from torch import nn

import memopt
from memopt.accelerated.storm import MetaSTORM, STORMPlus

N_DATA = 40


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N_DATA, 3, generator=g, dtype=torch.float64), torch.randn(
        N_DATA, 2, generator=g, dtype=torch.float64
    )


INPUTS, TARGETS = data()


def sample_loss(w: torch.Tensor, b: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """A non-convex minibatch loss of two tensors (robust regression)."""
    r = INPUTS[index] @ w + b - TARGETS[index]
    return torch.log1p(r * r).sum(dim=1).mean()


def oracle(params: list[torch.Tensor], index: torch.Tensor) -> list[torch.Tensor]:
    leaves = [p.detach().clone().requires_grad_() for p in params]
    return list(torch.autograd.grad(sample_loss(*leaves, index), leaves))


def samples(count: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, N_DATA, (5,), generator=g) for _ in range(count)]


def start() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return [torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(2, generator=g, dtype=torch.float64)]


def run_optimizer(make, batches, params=None, optimizer=None):
    """Step with a closure per minibatch; returns the iterates after each step, the optimizer, closure calls."""
    if params is None:
        params = [p.clone().requires_grad_() for p in start()]
    optimizer = optimizer or make(params)
    iterates, calls = [], []
    for index in batches:
        count = 0

        def closure(index=index):
            nonlocal count
            count += 1
            optimizer.zero_grad()
            loss = sample_loss(*params, index)
            loss.backward()
            return loss

        optimizer.step(closure)
        calls.append(count)
        iterates.append([p.detach().clone() for p in params])
    return iterates, optimizer, calls


CASES = {
    "meta_storm_general": (
        dict(rule="general", lr=0.2, a0=0.5, b0=0.1, p=0.5),
        lambda ps: MetaSTORM(ps, lr=0.2, a0=0.5, b0=0.1),
    ),
    "meta_storm_general_p": (
        dict(rule="general", lr=0.2, a0=0.5, b0=0.1, p=0.2),
        lambda ps: MetaSTORM(ps, lr=0.2, p=0.2, a0=0.5, b0=0.1),
    ),
    "meta_storm_sg": (
        dict(rule="sg", lr=0.2, a0=2.0, b0=0.1, p=0.3),
        lambda ps: MetaSTORM(ps, lr=0.2, p=0.3, a0=2.0, b0=0.1, variant="sg"),
    ),
    "storm_plus": (dict(rule="storm_plus", lr=0.3, a0=1.0, b0=1.0), lambda ps: STORMPlus(ps, lr=0.3)),
    "meta_storm_coordinate_ema": (
        dict(rule="general", lr=0.05, a0=0.1, b0=1e-3, p=0.5, per_coordinate=True, ema=True, betas=(0.9, 0.8),
             bias_correction=True),
        lambda ps: MetaSTORM(ps, lr=0.05, a0=0.1, b0=1e-3, per_coordinate=True, ema=True, betas=(0.9, 0.8),
                             bias_correction=True),
    ),
    "meta_storm_sg_coordinate_ema": (
        dict(rule="sg", lr=0.05, a0=0.1, b0=1e-3, p=0.5, per_coordinate=True, ema=True, betas=(0.9, 0.8)),
        lambda ps: MetaSTORM(ps, lr=0.05, a0=0.1, b0=1e-3, variant="sg", per_coordinate=True, ema=True,
                             betas=(0.9, 0.8)),
    ),
    "storm_plus_coordinate_ema": (
        dict(rule="storm_plus", lr=0.05, a0=0.1, b0=1e-3, per_coordinate=True, ema=True, bias_correction=True),
        lambda ps: STORMPlus(ps, lr=0.05, a0=0.1, b0=1e-3, per_coordinate=True, ema=True, bias_correction=True),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_the_paper_literal_reference(case):
    settings, make = CASES[case]
    batches = samples(25)
    ours, _, calls = run_optimizer(make, batches)
    expected = storm_reference(start(), oracle, batches, **settings)
    assert calls == [1] + [2] * 24
    for step, (got, want) in enumerate(zip(ours, expected)):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13, msg=f"step {step + 1}")


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_deterministic_gradients_telescope_to_gradient_descent_with_norm_step(p):
    """Same oracle at every step: d_t = grad f(x_t), the variance estimate is 0 so a = 1, and
    x -= lr g / (b0 + sum ||g_i||^2)^p (AdaGrad-Norm for p = 1/2)."""
    everything = torch.arange(N_DATA)
    batches = [everything] * 30
    ours, optimizer, _ = run_optimizer(lambda ps: MetaSTORM(ps, lr=0.3, p=p, b0=1e-2), batches)
    x = start()
    sums = [0.0, 0.0]
    for _ in batches:
        grads = oracle(x, everything)
        sums = [s + float((g * g).sum()) for s, g in zip(sums, grads)]
        x = [xi - 0.3 * g / (1e-2 + s) ** p for xi, g, s in zip(x, grads, sums)]
    for a, b in zip(ours[-1], x):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert all(float(s["a"]) == 1.0 for s in optimizer.state.values())


def test_momentum_weight_one_is_sgd_with_the_adaptive_step():
    """a0 huge keeps a = 1 exactly in the SG variant: d_t = g(x_t; xi_t), the STORM correction vanishes."""
    batches = samples(20)
    ours, _, _ = run_optimizer(lambda ps: MetaSTORM(ps, lr=0.3, a0=1e300, b0=0.1, variant="sg"), batches)
    x, sums = start(), [0.0, 0.0]
    for index in batches:
        grads = oracle(x, index)
        sums = [s + float((g * g).sum()) for s, g in zip(sums, grads)]
        x = [xi - 0.3 * g / math.sqrt(0.1 + s) for xi, g, s in zip(x, grads, sums)]
    for a, b in zip(ours[-1], x):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def test_both_closure_calls_of_a_step_see_the_same_dropout_masks():
    """With lr = 0 the parameters never move, so the correction gradient (same minibatch, same masks)
    must equal the current one: d_t = g_t + (1 - a_t)(d_{t-1} - g_t) for STORM+."""
    torch.manual_seed(0)
    model = DropoutNet()
    optimizer = STORMPlus(model.parameters(), lr=0.0)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    draws: list[list[float]] = []

    def closure():
        draws[-1].append(float(torch.rand(())))  # what the random generator gives inside each call
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    previous_d = None
    for _ in range(4):
        draws.append([])
        weight = model.net[0].weight
        a_before = optimizer.state[weight]["a"].clone() if optimizer.state[weight] else None
        optimizer.step(closure)
        g = weight.grad.clone()  # restored to the gradient at the current parameters
        d = optimizer.state[weight]["d"]
        if previous_d is None:
            torch.testing.assert_close(d, g)
        else:
            torch.testing.assert_close(d, g + (1 - a_before) * (previous_d - g), rtol=1e-6, atol=1e-7)
        previous_d = d.clone()
    assert [len(d) for d in draws] == [1, 2, 2, 2]
    assert all(len(set(d)) == 1 for d in draws)  # replayed generator state within a step
    assert len({d[0] for d in draws}) == 4  # and fresh randomness across steps


def test_generator_ends_where_one_closure_evaluation_would_leave_it():
    w = torch.zeros(3, requires_grad=True)
    optimizer = MetaSTORM([w], lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = (w - torch.rand(3)).square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)  # first step: one call
    torch.manual_seed(5)
    optimizer.step(closure)  # two calls, the second replayed
    after = torch.get_rng_state()
    torch.manual_seed(5)
    torch.rand(3)
    assert torch.equal(after, torch.get_rng_state())


def test_grad_holds_the_current_gradient_after_a_step_and_the_loss_is_returned():
    params = [p.clone().requires_grad_() for p in start()]
    optimizer = MetaSTORM(params, lr=0.1)
    index = samples(1)[0]

    def closure():
        optimizer.zero_grad()
        loss = sample_loss(*params, index)
        loss.backward()
        return loss

    optimizer.step(closure)
    before = [p.detach().clone() for p in params]
    loss = optimizer.step(closure)
    expected = oracle(before, index)
    for p, g in zip(params, expected):
        torch.testing.assert_close(p.grad, g)
    torch.testing.assert_close(loss.detach(), sample_loss(*before, index))


@pytest.mark.parametrize("cls", [MetaSTORM, STORMPlus])
def test_needs_a_closure(cls):
    w = torch.zeros(2, requires_grad=True)
    optimizer = cls([w])
    assert optimizer.needs_closure is True
    w.grad = torch.ones(2)
    with pytest.raises(ValueError, match=r"needs a closure.*needs_closure"):
        optimizer.step()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda w: MetaSTORM(w, p=0.1), r"Invalid p: 0\.1\. For variant='general', p must lie in \[\(3 - sqrt 7\)/2"),
        (
            lambda w: MetaSTORM(w, p=0.2, variant="sg"),
            r"Invalid p: 0\.2\. For variant='sg', p must lie in \[1/4, 1/2\]",
        ),
        (lambda w: MetaSTORM(w, p=0.6), r"Invalid p: 0\.6"),
        (lambda w: MetaSTORM(w, variant="generic"), r"Invalid variant: 'generic'.*Did you mean 'general'"),
        (lambda w: MetaSTORM(w, a0=0.0), r"Invalid a0: 0\.0\. a0 must be a finite number > 0"),
        (lambda w: STORMPlus(w, b0=-1.0), r"Invalid b0: -1\.0"),
        (lambda w: STORMPlus(w, betas=(0.9, 1.0), ema=True), r"Invalid betas\[1\]"),
        (lambda w: MetaSTORM(w, lr=-0.1), r"Invalid lr: -0\.1"),
    ],
)
def test_invalid_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make([torch.zeros(2, requires_grad=True)])


def assert_resume_is_bit_identical(make, batches, split: int) -> dict:
    """Run ``batches`` straight, and again saved after ``split`` steps and resumed in a new optimizer;
    assert the same final bits; return the saved state dict."""
    straight, _, _ = run_optimizer(make, batches)
    params = [p.clone().requires_grad_() for p in start()]
    _, optimizer, _ = run_optimizer(make, batches[:split], params=params)
    saved = optimizer.state_dict()
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    new_params = [p.detach().clone().requires_grad_() for p in params]
    new_optimizer = make(new_params)
    new_optimizer.load_state_dict(torch.load(buffer, weights_only=True))
    resumed, _, _ = run_optimizer(make, batches[split:], params=new_params, optimizer=new_optimizer)
    for a, b in zip(resumed[-1], straight[-1]):
        assert torch.equal(a, b)
    return saved


@pytest.mark.parametrize("case", ["meta_storm_general", "meta_storm_coordinate_ema", "storm_plus"])
def test_save_load_continue_is_bit_identical(case):
    assert_resume_is_bit_identical(CASES[case][1], samples(12), 5)


def test_loading_state_of_another_model_or_a_damaged_checkpoint_is_rejected():
    _, optimizer, _ = run_optimizer(lambda ps: MetaSTORM(ps, per_coordinate=True), samples(3))
    saved = optimizer.state_dict()
    other = MetaSTORM([torch.zeros(4, 2, requires_grad=True), torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\] \(shape \(4, 2\)\): state 'd' has shape"):
        other.load_state_dict(saved)
    del saved["state"][1]["g_prev"]
    fresh = MetaSTORM([p.clone().requires_grad_() for p in start()])
    with pytest.raises(ValueError, match=r"missing state keys \['g_prev'\]"):
        fresh.load_state_dict(saved)


def test_tiny_llama_with_a_closure_lowers_the_loss():
    """The harness contract on a LLaMA-style model: closure recomputes the loss of the current batch."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=32, use_cache=False,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    optimizer = memopt.build_optimizer(model, "meta_storm", **memopt.recommended_hparams("meta_storm"))
    assert getattr(optimizer, "needs_closure", False)
    tokens = torch.arange(32).repeat(4, 1) % 7  # a periodic sequence: learnable
    losses = []
    for _ in range(40):

        def closure():
            optimizer.zero_grad()
            loss = model(input_ids=tokens, labels=tokens).loss
            loss.backward()
            return loss

        losses.append(float(optimizer.step(closure).detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_an_8bit_previous_iterate_is_decoded_for_the_correction_gradient():
    # x_prev held in 8 bits is one QuantizedState entry; the correction gradient is evaluated at its decoded
    # value (within the 8-bit error of the previous parameters), not at the codes read as numbers
    torch.manual_seed(0)
    param = torch.randn(64, 128, requires_grad=True)
    optimizer = MetaSTORM([param], state_storage="8bit")
    seen = []
    original = optimizer._previous_iterate
    optimizer._previous_iterate = lambda p: seen.append(original(p).detach().clone()) or seen[-1]

    def closure():
        optimizer.zero_grad()
        loss = param.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    previous = param.detach().clone()
    optimizer.step(closure)
    assert len(seen) == 1
    assert (seen[0] - previous).abs().max() <= 0.01 * previous.abs().max()
