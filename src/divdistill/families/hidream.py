"""HiDream-I1 (Full / Dev / Fast): four text encoders, a sparse (MoE) DiT, flow matching with a negated velocity.

What is particular to it, all read from diffusers' `HiDreamImagePipeline`:

* Prompts go through two CLIP encoders (pooled, concatenated: `pooled_embeds`), T5 (`encoder_hidden_states_t5`)
  and Llama-3.1-8B-Instruct, whose hidden states of every layer are stacked layer-first (L, B, S, D) and passed
  whole (`encoder_hidden_states_llama3`; the transformer picks `llama_layers`). divdistill keeps them batch-first
  (B, L, S, D) in the conditioning, so guidance stacks branches along the batch as for every family, and turns them
  back layer-first around the network call (a view: the values are the pipeline's).
* The transformer's output is the negative of the flow velocity (the pipeline does `noise_pred = -noise_pred`);
  `forward` negates it, so the scheduler, x0-hat (x - sigma v) and hand-offs see the usual velocity.
* Guidance is plain CFG in one batched call [negative, positive] with an empty negative prompt (Full, scale 5);
  Dev and Fast are guidance-distilled and run at scale 0, one call.
* The pipeline samples at 1024^2 pixels of area whatever size is asked (`S_max`): it rescales the requested size to
  that area, keeping the aspect ratio, floored to multiples of 16, and returns images of that size. `sampling_size`
  does the same, and the image comes back at the sampled size, as diffusers' does (the run records `sampled_size`).
* Schedules: Full publishes UniPC on flow sigmas (shift 3), Fast and Dev a flow-matching scheduler with a fixed shift;
  the pipeline's `mu` (from the transformer's `max_seq`) is passed but only dynamic-shifting schedulers read it.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from divdistill.conditioning import Conditioning, PromptRequest
from divdistill.families.base import NetworkInputs, config_problems, vae_problems
from divdistill.families.transformer import FlowFamily, _decode_shifted

LLAMA, POOLED = "llama3", "pooled_embeds"
LLAMA_REPO = "meta-llama/Meta-Llama-3.1-8B-Instruct"


class HiDreamFamily(FlowFamily):
    """HiDream-I1 Full / Dev / Fast: CLIP-L + CLIP-G (pooled), T5-XXL and Llama-3.1 layers, MoE DiT, CFG or none."""

    name = "hidream"
    pipeline_class = "HiDreamImagePipeline"
    network_class = "HiDreamImageTransformer2DModel"
    text_encoders = ("text_encoder", "text_encoder_2", "text_encoder_3", "text_encoder_4")
    tokenizers = ("tokenizer", "tokenizer_2", "tokenizer_3", "tokenizer_4")
    #: The HiDream-I1 repos hold no Llama encoder: diffusers' docs and the authors' README load it from Meta's
    #: (gated) repo with every hidden state returned, and pass it in.
    external_components: ClassVar[dict[str, tuple[str, str, dict[str, Any]]]] = {
        "text_encoder_4": (LLAMA_REPO, "LlamaForCausalLM", {"output_hidden_states": True, "output_attentions": True}),
        "tokenizer_4": (LLAMA_REPO, "PreTrainedTokenizerFast", {}),
    }

    def encode(self, pipe, request: PromptRequest):
        t5, negative_t5, llama, negative_llama, pooled, negative_pooled = pipe.encode_prompt(
            prompt=request.prompts,
            device=request.device,
            num_images_per_prompt=request.num_images_per_prompt,
            do_classifier_free_guidance=request.with_negative,
            negative_prompt=request.negative_prompts,  # None: the pipeline's empty negative prompt
            max_sequence_length=request.max_sequence_length or 128,
        )
        negative_added = None
        if request.with_negative:
            negative_added = {LLAMA: negative_llama.transpose(0, 1), POOLED: negative_pooled}
        return Conditioning(
            hidden_states=t5,
            negative_hidden_states=negative_t5 if request.with_negative else None,
            added={LLAMA: llama.transpose(0, 1), POOLED: pooled},
            negative_added=negative_added,
        )

    def forward(self, network, x, t, inputs: NetworkInputs):
        added = inputs.added or {}
        output = network(
            hidden_states=x,
            timesteps=t.expand(x.shape[0]),
            encoder_hidden_states_t5=inputs.hidden_states,
            encoder_hidden_states_llama3=added[LLAMA].transpose(0, 1),
            pooled_embeds=added[POOLED],
            attention_kwargs=inputs.attention_kwargs,
            return_dict=False,
        )[0]
        return -output  # HiDreamImagePipeline: noise_pred = -noise_pred

    def mu(self, pipe, scheduler, latent_shape):
        """The pipeline's `calculate_shift(transformer.max_seq)` (read only by dynamic-shifting schedulers)."""
        from diffusers.pipelines.hidream_image.pipeline_hidream_image import calculate_shift

        return calculate_shift(self.network(pipe).max_seq)

    def sampling_size(self, pipe, height, width, binning=False):
        """HiDreamImagePipeline.__call__'s rescale to the area of its default size, floored to the patch grid."""
        division = pipe.vae_scale_factor * 2
        scale = math.sqrt((pipe.default_sample_size * pipe.vae_scale_factor) ** 2 / (width * height))
        return int(height * scale // division * division), int(width * scale // division * division)

    def latent_shape(self, pipe, batch_size, height, width):
        factor = pipe.vae_scale_factor * 2
        if height % factor or width % factor:
            raise ValueError(f"HiDream needs height and width divisible by {factor}; got {height}x{width}.")
        channels = self.network(pipe).config.in_channels
        return (batch_size, channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)

    def default_size(self, pipe):
        return pipe.default_sample_size * pipe.vae_scale_factor

    def decode(self, pipe, latents, output_type, size=None):
        return _decode_shifted(pipe, latents, output_type)  # at the sampled size, as the pipeline returns it

    def pair_problems(self, base, distilled):
        keys = ("in_channels", "out_channels", "patch_size", "caption_channels", "text_emb_dim", "llama_layers",
                "axes_dims_rope", "max_resolution")  # fmt: skip
        problems = config_problems("transformer", base.transformer, distilled.transformer, keys)
        if base.default_sample_size != distilled.default_sample_size:
            problems.append("default sample size differs (the area both pipelines sample at)")
        return problems + vae_problems(base, distilled)
