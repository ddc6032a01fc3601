"""Mixing prediction types: an epsilon base on a v-prediction student's schedule sees the same x0-hat."""

from __future__ import annotations

import torch

from divdistill import HybridPipeline
from divdistill.prediction import convert_prediction, to_x0_and_eps
from pairs import sd_pair


def test_conversions_round_trip_and_agree_on_x0() -> None:
    generator = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    alpha_prod = torch.tensor(0.3)
    v = convert_prediction(eps, "epsilon", "v_prediction", x, alpha_prod)
    torch.testing.assert_close(convert_prediction(v, "v_prediction", "epsilon", x, alpha_prod), eps)
    x0_from_eps, _ = to_x0_and_eps(eps, "epsilon", x, alpha_prod)
    x0_from_v, eps_from_v = to_x0_and_eps(v, "v_prediction", x, alpha_prod)
    torch.testing.assert_close(x0_from_v, x0_from_eps)
    torch.testing.assert_close(eps_from_v, eps)
    torch.testing.assert_close(x0_from_eps, (x - (1 - alpha_prod).sqrt() * eps) / alpha_prod.sqrt())
    assert convert_prediction(eps, "epsilon", "epsilon", x, alpha_prod) is eps  # same type: untouched


def test_epsilon_base_on_a_v_prediction_schedule() -> None:
    base, distilled = sd_pair("euler", distilled_prediction="v_prediction")
    pipe = HybridPipeline(base, distilled)
    steps = []
    pipe("a cat", base_steps=1, base_guidance_scale=0.0, num_inference_steps=4, height=64, width=64,
         generator=torch.Generator().manual_seed(0), output_type="latent", callback=steps.append)  # fmt: skip
    first = steps[0]
    eps = base.unet(first.model_input, first.timestep, encoder_hidden_states=base.encode_prompt(
        "a cat", "cpu", 1, False)[0]).sample  # fmt: skip
    alpha_prod = distilled.scheduler.alphas_cumprod[999]
    expected = (first.model_input - (1 - alpha_prod).sqrt() * eps) / alpha_prod.sqrt()
    torch.testing.assert_close(first.x0, expected, rtol=1e-4, atol=1e-4)
