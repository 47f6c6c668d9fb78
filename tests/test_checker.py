"""The shared equivariance checker: passes escnn / e3nn equivariant layers, fails an MLP control."""
import pytest
import torch

from symclone.equivariance import assert_equivariant, equivariance_error


def _escnn_conv():
    from escnn import gspaces
    from escnn import nn as enn

    r2 = gspaces.rot2dOnR2(4)
    conv = enn.R2Conv(enn.FieldType(r2, [r2.trivial_repr]), enn.FieldType(r2, [r2.regular_repr] * 2),
                      kernel_size=3, padding=1, padding_mode="circular")
    in_type = conv.in_type
    return lambda x: conv(enn.GeometricTensor(x, in_type)).tensor, conv


def test_escnn_r2conv_passes_c4_and_p4():
    f, conv = _escnn_conv()
    x = torch.randn(2, 1, 9, 9)
    res = assert_equivariant(f, "c4", "image", "regular", x=x, dtype=None, atol=1e-5)
    assert res["n"] == 4 and res["dtype"] == "float32"
    assert_equivariant(f, "p4", "image", "regular", x=x, dtype=None, atol=1e-5, n=6)


def test_e3nn_linear_passes_o3():
    from e3nn import o3

    lin = o3.Linear("2x0e+2x1o", "3x0e+1x1o")
    res = assert_equivariant(lin, "o3", "irreps:2x0e+2x1o", "irreps:3x0e+1x1o", input_shape=(3, 4, 8))
    assert res["max"] < 1e-10 and res["dtype"] == "float64"
    # the module is restored to float32 after the float64 check
    assert next(lin.parameters()).dtype == torch.float32


def test_unconstrained_mlp_fails():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(81, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 81), torch.nn.Unflatten(1, (1, 9, 9)))
    with pytest.raises(AssertionError, match="not equivariant under c4"):
        assert_equivariant(mlp, "c4", "image", "image", input_shape=(4, 1, 9, 9))
    err = equivariance_error(mlp, "c4", "image", "image", input_shape=(4, 1, 9, 9))
    assert err["errors"][0] < 1e-12  # identity element
    assert min(err["errors"][1:]) > 0.1
    mlp3 = torch.nn.Linear(3, 3)
    with pytest.raises(AssertionError):
        assert_equivariant(mlp3, "so3", "points", "points", input_shape=(2, 5, 3))


def test_continuous_group_is_sampled():
    f = lambda x: x * x.norm(dim=-1, keepdim=True)  # noqa: E731  (rotation-equivariant)
    res = assert_equivariant(f, "so3", "points", "points", input_shape=(2, 5, 3), n=5)
    assert res["n"] == 5


def test_checker_bad_input():
    with pytest.raises(ValueError, match="input_shape"):
        equivariance_error(lambda x: x, "c4", "image", "image")
    with pytest.raises(ValueError, match="rep_out"):
        equivariance_error(lambda x: x, "c4", "image", "points", input_shape=(1, 1, 5, 5))
