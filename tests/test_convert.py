"""``alignment.convert``: outputs preserved, BP equals autograd, symmetric limits, clear errors."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

import alignment
from alignment import models


def grads(model: nn.Module, x: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    x = x.clone().requires_grad_()
    y = model(x)
    target = torch.randint(
        0, y.shape[1], (x.shape[0],), generator=torch.Generator().manual_seed(seed)
    )
    loss = nn.functional.cross_entropy(y, target)
    params = [
        p for name, p in model.named_parameters() if name.split(".")[-1] in ("weight", "bias")
    ]
    return list(torch.autograd.grad(loss, [x, *params]))


def assert_all_close(a: list[torch.Tensor], b: list[torch.Tensor], tol: float = 1e-10) -> None:
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=tol, atol=tol)


def small_convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )


@pytest.mark.parametrize(
    "factory,shape",
    [
        (models.mlp, (4, 1, 28, 28)),
        (models.lenet, (4, 1, 28, 28)),
        (models.resnet20, (2, 3, 32, 32)),
    ],
    ids=["mlp", "lenet", "resnet20"],
)
def test_bp_equals_torch_autograd_on_whole_models(factory, shape) -> None:
    torch.manual_seed(0)
    plain = factory().double()
    x = torch.randn(shape, dtype=torch.float64)
    assert_all_close(grads(alignment.convert(plain, "bp"), x), grads(plain, x))


def test_bp_layers_pass_gradcheck() -> None:
    torch.manual_seed(0)
    linear = alignment.Linear(4, 3, rule="bp", dtype=torch.float64)
    conv = alignment.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, rule="bp", dtype=torch.float64)
    same = alignment.Conv2d(2, 3, 4, padding="same", rule="bp", dtype=torch.float64)
    for layer, shape in [(linear, (2, 4)), (conv, (1, 4, 4, 4)), (same, (1, 2, 4, 3))]:
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        params = (layer.weight, layer.bias)
        fn = lambda x, w, b, layer=layer: torch.func.functional_call(  # noqa: E731
            layer, {"weight": w, "bias": b}, (x,)
        )
        assert torch.autograd.gradcheck(fn, (x, *params), fast_mode=True)


@pytest.mark.parametrize("padding_mode", ["reflect", "circular", "replicate"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_conv_padding_modes_match_autograd_under_bp(padding_mode: str, dims: int) -> None:
    torch.manual_seed(0)
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    plain = conv(2, 3, 3, padding=1, padding_mode=padding_mode, dtype=torch.float64)
    x = torch.randn(2, 2, *(5,) * dims, dtype=torch.float64)
    converted = alignment.convert(plain, "bp")
    assert torch.equal(converted(x), plain(x))
    assert_all_close(
        grads(nn.Sequential(converted, nn.Flatten()), x),
        grads(nn.Sequential(plain, nn.Flatten()), x),
    )


@pytest.mark.parametrize("rule", list(alignment.RULES))
def test_convert_preserves_outputs_bitwise_for_resnets(rule: str) -> None:
    torch.manual_seed(0)
    cases = [(models.resnet20(), torch.randn(2, 3, 32, 32))]
    if rule in ("bp", "dfa", "pfa"):  # the conversion code path is the same for every rule
        cases.append((models.resnet18(num_classes=10), torch.randn(1, 3, 40, 40)))
    for net, x in cases:
        net.eval()
        converted = alignment.convert(net, rule)
        assert torch.equal(converted(x), net(x))
        assert sum(isinstance(m, alignment.FeedbackLayer) for m in converted.modules()) == sum(
            isinstance(m, nn.Linear | nn.Conv2d) for m in net.modules()
        )


def test_convert_copies_and_leaves_the_original_alone() -> None:
    net = models.mlp()
    converted = alignment.convert(net, "fa")
    assert type(net[1]) is nn.Linear and type(converted[1]) is alignment.Linear
    assert converted[1].weight is not net[1].weight
    assert torch.equal(converted[1].weight, net[1].weight)


def test_bare_layers_come_back_as_converted_layers() -> None:
    layer = alignment.convert(nn.Linear(3, 2), "pfa", k=4)
    assert isinstance(layer, alignment.Linear) and layer.R.shape == (8, 3)
    conv = alignment.convert(nn.Conv2d(3, 2, 3, bias=False), "fa")
    assert isinstance(conv, alignment.Conv2d) and conv.bias is None and conv.B.shape == (2, 3, 3, 3)


def test_converted_models_convert_again_to_another_rule() -> None:
    net = alignment.convert(models.mlp(), "dfa")
    again = alignment.convert(net, "pfa", k=2)
    assert again[1].rule.name == "pfa" and not hasattr(again[1], "D")
    x = torch.randn(3, 784)
    assert torch.equal(again(x), net(x))
    again(x).sum().backward()
    assert again[1].R.grad is not None


def test_shared_layers_stay_shared() -> None:
    shared = nn.Linear(4, 4)
    net = alignment.convert(nn.Sequential(shared, nn.ReLU(), shared), "fa")
    assert net[0] is net[2]


def test_unconvertible_layers_are_listed_in_a_warning() -> None:
    net = nn.Sequential(nn.Embedding(5, 2), nn.Flatten(), nn.BatchNorm1d(2), nn.Linear(2, 2))
    with pytest.warns(alignment.UnconvertedLayerWarning, match=r"0 \(Embedding\)") as record:
        alignment.convert(net, "fa")
    assert "BatchNorm" not in str(record[0].message)


def test_unsupported_bare_layer_raises() -> None:
    with pytest.raises(TypeError, match=r"rules exist for nn\.Linear and nn\.Conv1d/2d/3d"):
        alignment.convert(nn.ConvTranspose2d(2, 2, 3), "fa")


@pytest.mark.parametrize(
    "rule,options,message",
    [
        (
            "pfa2",
            {},
            r"unknown rule 'pfa2'; valid rules: bp, fa, dfa, usf, frsf, brsf, pfa, pfa_o, kp",
        ),
        ("pfa", {"k": 0}, r"k=0 is invalid; k must be an int ≥ 1"),
        ("pfa", {"k": 2.5}, r"k=2.5 is invalid"),
        ("pfa", {"density": 0.0}, r"density=0.0 is outside \(0, 1\]"),
        ("fa", {"density": 1.5}, r"density=1.5 is outside \(0, 1\]"),
        ("pfa", {"b_init": "orthogonal", "k": 2}, r"b_init='orthogonal' needs k=1"),
        ("pfa", {"b_init": "gaussian"}, r"valid choices: 'random', 'orthogonal', 'identity'"),
        ("fa", {"init": "he"}, r"valid choices: 'xavier', 'kaiming'"),
        ("fa", {"k": 3}, r"rule 'fa' has no option k; valid options: density, init"),
        ("bp", {"density": 0.5}, r"rule 'bp' has no option density; valid options: none"),
        ("pfa_o", {"k": 3}, r"'pfa_o' fixes k=1 and b_init='orthogonal'"),
        ("pfa", {"path": "fast"}, r"valid choices: 'auto', 'product', 'two_stage'"),
    ],
)
def test_invalid_rules_and_options_raise_clear_errors(
    rule: str, options: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        alignment.convert(nn.Linear(2, 2), rule, **options)


def test_pfa_o_is_pfa_with_k1_and_orthogonal_b() -> None:
    layer = alignment.convert(nn.Linear(6, 4, dtype=torch.float64), "pfa_o")
    assert layer.rule.k == 1 and layer.rule.b_init == "orthogonal"
    torch.testing.assert_close(layer.B @ layer.B.T, torch.eye(4, dtype=torch.float64))


def test_pfa_b_gain_gives_unit_expected_bbt() -> None:
    """Var(B_ij) = 1/(ρ N_mid): the Xavier bound is sqrt(3/(ρ N_mid))."""
    torch.manual_seed(0)
    layer = alignment.convert(nn.Linear(30, 40), "pfa", k=5, density=0.25)
    n_mid = 200
    bound = (3.0 / (0.25 * n_mid)) ** 0.5
    assert layer.B.abs().max() <= bound and layer.B.abs().max() > 0.95 * bound
    assert 0.2 < layer.B_mask.mean() < 0.3


def test_identity_b_makes_pfa_kolen_pollack() -> None:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    pfa = alignment.convert(base, "pfa", k=1, b_init="identity")
    kp = alignment.convert(base, "kp")
    with torch.no_grad():
        for p, k in [(pfa[0], kp[0]), (pfa[2], kp[2])]:
            k.B.copy_(p.R)
    x = torch.randn(6, 5, dtype=torch.float64)
    assert_all_close(grads(pfa, x), grads(kp, x))
    pfa(x).sum().backward()
    kp(x).sum().backward()
    torch.testing.assert_close(pfa[0].R.grad, kp[0].B.grad)


class TestSymmetricLimits:
    """Each rule with its feedback set to the forward weights is exactly BP."""

    @staticmethod
    def pair(rule: str, **options: object) -> tuple[nn.Module, nn.Module]:
        torch.manual_seed(0)
        base = small_convnet().double()
        return alignment.convert(base, "bp"), alignment.convert(base, rule, **options)

    @staticmethod
    def layers(model: nn.Module) -> list[alignment.FeedbackLayer]:
        return [m for m in model.modules() if isinstance(m, alignment.FeedbackLayer)]

    def check(self, bp: nn.Module, other: nn.Module) -> None:
        x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
        assert_all_close(grads(other, x), grads(bp, x))

    def test_fa_with_b_equal_w_is_bp(self) -> None:
        bp, fa = self.pair("fa")
        with torch.no_grad():
            for layer in self.layers(fa):
                layer.B.copy_(layer.weight)
        self.check(bp, fa)

    @pytest.mark.parametrize("path", ["product", "two_stage"])
    def test_pfa_with_orthogonal_b_and_r_equal_btw_is_bp(self, path: str) -> None:
        bp, pfa = self.pair("pfa_o", path=path)
        with torch.no_grad():
            for layer in self.layers(pfa):
                layer.R.copy_(torch.einsum("om,o...->m...", layer.B, layer.weight))
        self.check(bp, pfa)

    def test_kp_with_b_equal_w_is_bp(self) -> None:
        bp, kp = self.pair("kp")
        with torch.no_grad():
            for layer in self.layers(kp):
                layer.B.copy_(layer.weight)
        self.check(bp, kp)

    def test_fa_with_random_b_is_not_bp(self) -> None:
        bp, fa = self.pair("fa")
        x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
        assert not torch.allclose(grads(fa, x)[0], grads(bp, x)[0])


def test_converted_models_deepcopy_and_pickle() -> None:
    for rule in alignment.RULES:
        net = alignment.convert(models.lenet(), rule)
        x = torch.randn(2, 1, 28, 28)
        for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
            torch.manual_seed(0)
            clone(x).sum().backward()
            torch.manual_seed(0)
            assert torch.equal(clone(x), net(x))
