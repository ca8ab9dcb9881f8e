"""DECS against one training step of the authors' own TensorFlow code, in the spirit of minGPT's test against
the reference GPT-2: same weights, same batch, the same loss, threshold, soft assignments and gradients.

The reference files (``decs_official_step.npz``, ``decs_official_step_model.pt``) and the tolerances that
hold are described in the data README; a change to the loss, the Otsu threshold, the inference pass that
gives it, or the gradient paths fails here.
"""
import numpy as np
import pytest
import torch

from core.losses import student_t_assign
from core.methods import Batch
from core.methods.decs import DECS
from core.train import RunConfig


@pytest.fixture(scope="module")
def official(shared_data):
    step, weights = shared_data / "decs_official_step.npz", shared_data / "decs_official_step_model.pt"
    for path in (step, weights):
        assert path.is_file(), f"{path} is missing: it belongs beside the data sets (see the data README)"
    with np.load(step, allow_pickle=False) as arrays:
        reference = {name: arrays[name] for name in arrays.files}
    # the cpu preset as the official code runs (t from the inference pass); no augmentation for one fixed batch
    config = RunConfig.build("decs", "usps", preset="cpu", overrides={"augment": False})
    method = DECS(config.params, 10)
    model = method.build((1, 16, 16))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return reference, method, model


def relative_error(ours: torch.Tensor, theirs: np.ndarray) -> float:
    theirs = torch.as_tensor(theirs, dtype=ours.dtype)
    return float((ours - theirs).norm() / theirs.norm())


def test_presets_that_claim_the_paper_take_t_from_the_inference_pass():
    for preset in ("cpu", "paper", "DECS-official"):
        assert RunConfig.build("decs", "usps", preset=preset).params.t_eval_pass, preset


def test_one_step_matches_the_official_code(official):
    reference, method, model = official
    x = torch.from_numpy(reference["x"])  # (256, 1, 16, 16)
    with torch.no_grad():
        q_eval = student_t_assign(model.eval().ae.encode(x), model.centroids, method.config.alpha)  # (256, 10)
    np.testing.assert_allclose(q_eval.numpy(), reference["q_eval"], atol=2e-5)  # measured 3e-6

    model.train()
    model.zero_grad(set_to_none=True)
    terms = method.training_step(model, Batch(x, torch.arange(len(x))), "cluster")
    assert method.t_sum == pytest.approx(float(reference["t"]), abs=1e-6)  # the Otsu bin itself: 0.219
    assert terms["loss"].item() == pytest.approx(float(reference["loss"]), abs=1e-5)  # 0.4017322 vs 0.4017318
    with torch.no_grad():
        q_train = student_t_assign(model.ae.encode(x), model.centroids, method.config.alpha)
    np.testing.assert_allclose(q_train.numpy(), reference["q_train"], atol=1e-4)  # measured 2.2e-5

    terms["loss"].backward()
    embedding = model.ae.encoder[-1]  # the Linear to the 10-d code
    centroid_grad = model.centroids.grad
    cosine = torch.nn.functional.cosine_similarity(centroid_grad.flatten(),
                                                   torch.from_numpy(reference["grad_centroids"]).flatten(), dim=0)
    assert float(cosine) > 0.9999
    assert relative_error(centroid_grad, reference["grad_centroids"]) < 1e-3          # measured 1.1e-4
    assert relative_error(embedding.bias.grad, reference["grad_embedding_bias"]) < 1e-3  # measured 1.0e-4
    # the kernel's inputs are flattened NHWC there and NCHW here: only each output's gradient norm compares
    assert relative_error(embedding.weight.grad.norm(dim=1), reference["grad_embedding_column_norms"]) < 1e-3
    assert all(p.grad is None for p in model.ae.decoder.parameters())  # no decoder term in the official loop
