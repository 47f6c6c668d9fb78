"""Students: shapes, registry, exact algebra of the blocks student, checkpoints, bad input."""
import pytest
import torch

from symclone.io import CheckpointError
from symclone.registry import create_student, create_teacher, list_students
from symclone.students import infer_activations, load_student, save_student
from symclone.equivariance import equivariance_error

STUDENTS = ["mlp", "transformer", "blocks"]


@pytest.fixture(scope="module")
def cnn():
    return create_teacher("cnn", channels=2, depth=2, size=6)


@pytest.fixture(scope="module")
def gcnn():
    return create_teacher("gcnn_c4", fields=1, depth=2, size=6)


def test_registry_lists_students():
    assert set(STUDENTS) <= set(list_students())


@pytest.mark.parametrize("name", STUDENTS)
def test_feature_shapes_match_teacher(name, cnn, gcnn):
    for teacher in (cnn, gcnn):
        s = create_student(name, teacher=teacher, **({"dim": 16, "patch": 2} if name == "transformer" else {}))
        x = torch.randn(3, *teacher.feature_shapes[0])
        assert [f.shape for f in s.forward_features(x)] == [f.shape for f in teacher.forward_features(x)]
        assert [str(r) for r in s.reps] == [str(r) for r in teacher.reps]
        assert s.num_layers == teacher.num_layers


def test_infer_activations(cnn):
    assert infer_activations(cnn) == ["relu", "relu"]


def test_mlp_dense_matrix_is_its_map(cnn):
    s = create_student("mlp", teacher=cnn)
    h = torch.randn(4, *cnn.feature_shapes[0])
    W, b = s.dense_matrix(1), s.layers[0].bias
    ref = (h.flatten(1) @ W.T + b).view(4, *cnn.feature_shapes[1])
    assert torch.allclose(s.layer_forward(1, h, pre_activation=True), ref, atol=1e-6)


def test_blocks_nine_shift_matrices_reproduce_conv_exactly():
    """B = 9 blocks set to the unrolled basis kernels (H = I) equal the teacher conv for any kernel."""
    t = create_teacher("cnn", paper_layer=True).double()
    s = create_student("blocks", teacher=t, blocks=9).double()
    layer = s.layers[0]
    with torch.no_grad():
        layer.scale.fill_(1.0)
        layer.H.copy_(torch.eye(9, dtype=torch.float64))
        layer.W.copy_(torch.stack([t.as_dense(1, params=e) for e in torch.eye(9, dtype=torch.float64)]))
    x = torch.randn(5, 1, 28, 28, dtype=torch.float64)
    k = torch.randn(3, 9, dtype=torch.float64)
    ref = torch.stack([torch.nn.functional.conv2d(x, kk.view(1, 1, 3, 3)) for kk in k])  # independent reference
    assert torch.allclose(s.layer_forward(1, x, params=k, pre_activation=True), ref, atol=1e-10)
    assert torch.allclose(s.dense_matrix(1, k[0]), t.as_dense(1, params=k[0]), atol=1e-12)


def test_blocks_orientation_layout_matches_dense_matrix(gcnn):
    s = create_student("blocks", teacher=gcnn, blocks=4, seed=3)
    assert s.layers[0].R == 4 and s.layers[1].R == 4
    with torch.no_grad():
        s.layers[0].A.add_(0.1 * torch.randn_like(s.layers[0].A))
    x = torch.randn(2, 1, 6, 6)
    k = torch.randn(gcnn.num_layer_params(1))
    pre = s.layer_forward(1, x, params=k.unsqueeze(0), pre_activation=True)[0]
    assert torch.allclose(pre.flatten(1), x.flatten(1) @ s.dense_matrix(1, k).T, atol=1e-5)
    assert s.block_matrices(1).shape == (4, 36, 36)


def test_untrained_students_are_not_equivariant(cnn):
    for name in STUDENTS:
        s = create_student(name, teacher=cnn, **({"dim": 16, "patch": 2} if name == "transformer" else {}))
        f = lambda x, s=s: s.forward_features(x)[0]  # noqa: E731
        err = equivariance_error(f, cnn.group, "image", "image", input_shape=(2, 1, 6, 6), dtype=None,
                                 elements=[torch.tensor([1, 2]), torch.tensor([3, 0])])
        assert err["mean"] > 0.2, name


@pytest.mark.parametrize("name", STUDENTS)
def test_save_load_roundtrip_and_errors(name, cnn, tmp_path):
    s = create_student(name, teacher=cnn, seed=5, **({"dim": 16, "patch": 2} if name == "transformer" else {}))
    save_student(s, tmp_path / "st")
    s2 = load_student(tmp_path / "st")
    x = torch.randn(2, 1, 6, 6)
    assert torch.equal(s(x), s2(x))
    (tmp_path / "st.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_student(tmp_path / "st")
    with pytest.raises(CheckpointError):
        load_student(tmp_path / "missing")


def test_mismatched_checkpoint_raises(cnn, tmp_path):
    save_student(create_student("mlp", teacher=cnn), tmp_path / "a")
    from _ckpt import edit_meta

    def wider(meta):  # the metadata lives in the safetensors header
        meta["kwargs"]["feature_shapes"][1] = [3, 6, 6]
        meta["kwargs"]["feature_shapes"][2] = [3, 6, 6]
    edit_meta(tmp_path / "a", wider)
    with pytest.raises(CheckpointError, match="does not match"):
        load_student(tmp_path / "a")


def test_bad_input_shapes_raise(cnn):
    s = create_student("blocks", teacher=cnn)
    with pytest.raises(ValueError, match=r"expects shape \(B, 1, 6, 6\)"):
        s(torch.randn(2, 1, 5, 5))
    with pytest.raises(ValueError, match="params: layer 1 expects"):
        s.layer_forward(1, torch.randn(2, 1, 6, 6), params=torch.randn(3, 5))
    with pytest.raises(ValueError, match="not kernel-conditioned"):
        create_student("mlp", teacher=cnn).layer_forward(1, torch.randn(2, 1, 6, 6), params=torch.randn(18))
    with pytest.raises(ValueError, match="blocks: layer 1 would need"):
        create_student("blocks", feature_shapes=[[64, 64, 64], [64, 64, 64]], reps=["image", "image"],
                       num_params=[36864])


def test_transformer_point_tokens():
    s = create_student("transformer", feature_shapes=[[5, 3], [5, 8]], reps=["points", "irreps:8x0e"], dim=16)
    assert s(torch.randn(2, 5, 3)).shape == (2, 5, 8)
