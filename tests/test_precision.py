"""Under autocast around the loss (a user's own loop), the objectives compute in float32.

CPU autocast runs matmul and linear in bf16, as CUDA's does; a loss that did not leave autocast would compute its
similarities and TempNet's tau in bf16 (gradient error ~1e-2 at tau 0.05). The reference is the same loss on the
same inputs cast to float32 with no autocast anywhere.
"""

from __future__ import annotations

import pytest
import torch

from tempnlp.objectives import DCL, InfoNCE, SogCLR
from tempnlp.temperature import IndividualTemperature, TempNetTemperature

B, D, N = 16, 32, 40


def _objectives():
    torch.manual_seed(3)
    return {
        "infonce-0.01": InfoNCE(0.01, symmetric=True),
        "dcl": DCL(0.05),
        "infonce-tempnet": InfoNCE(TempNetTemperature(D, hidden=16, tau_init=0.05, tau_min=0.01)),
        "sogclr-individual": SogCLR(N, IndividualTemperature(N, tau_init=0.05, tau_min=0.01)),
    }


def _inputs(dtype: torch.dtype):
    generator = torch.Generator().manual_seed(0)
    anchors = torch.randn(B, D, generator=generator)
    positives = anchors + 0.3 * torch.randn(B, D, generator=generator)
    negatives = torch.randn(B, D, generator=generator)
    indices = torch.randperm(N, generator=generator)[:B]
    return [t.to(dtype).requires_grad_() for t in (anchors, positives, negatives)], indices


def _run(objective, inputs, indices, autocast: bool):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = objective(inputs[0], inputs[1:], indices)
    parameters = [p for p in objective.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [*inputs, *parameters])
    return loss, grads


@pytest.mark.parametrize("name", list(_objectives()))
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_loss_and_gradients_under_bf16_autocast_are_the_float32_ones(name, input_dtype):
    inputs, indices = _inputs(input_dtype)
    under_autocast = _objectives()[name]
    reference = _objectives()[name]
    loss, grads = _run(under_autocast, inputs, indices, autocast=True)
    as_float = [t.detach().float().requires_grad_() for t in inputs]
    expected_loss, expected = _run(reference, as_float, indices, autocast=False)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-6)
    for position, (grad, want) in enumerate(zip(grads, expected, strict=True)):
        assert grad.dtype == (input_dtype if position < len(inputs) else torch.float32)  # inputs, then parameters
        torch.testing.assert_close(grad.float(), want.to(grad.dtype).float(), rtol=1e-5, atol=1e-6)
    # the state written in the step is the float32 one too
    for (key, value), (_, want) in zip(
        under_autocast.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(value, want, rtol=1e-6, atol=1e-7, msg=key)
