"""Weight deltas: what a full fine-tune (DreamBooth, any fine-tune) or a Custom Diffusion concept changed.

    delta = delta_from_finetune("dreambooth-dog/", pipe.base.unet)     # finetuned - reference, per parameter
    lora = delta_to_lora(delta, energy=0.99)                            # compressed (divdistill.control.svd)

A `ParameterDelta` holds, per parameter of the network it was taken against (names as the bare network has
them; PEFT wrappers are seen through, so a LoRA-student network has the same names), `finetuned - reference` in
float32, and the fine-tuned values themselves. Keeping those is what makes a delta exact where it matters: applied
at scale 1 on the very network it was taken against (recognised by content, `reference_digest`), the weights
become the fine-tuned ones bit for bit (`torch.lerp(W, W_ft, 1) == W_ft`; `W + (W_ft - W)` in floating point
need not be). Parameters the fine-tune left bit-identical are not stored.

Sources a fine-tune may come as (`divdistill.control.finetuned`): a diffusers pipeline or model folder, a repo
id, a single-file checkpoint, a raw state dict file of the network, a module or a state dict.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

from divdistill.control.parameters import network_parameters


class DeltaMismatchError(ValueError):
    """A fine-tune (or Custom Diffusion file) whose parameters are not the reference network's: the message lists
    the names only one side has and the shapes that differ."""

    def __init__(
        self,
        source: str,
        target: str,
        only_finetuned: list[str],
        only_reference: list[str],
        shapes: list[str],
        limit: int = 8,
    ):
        self.only_finetuned, self.only_reference, self.shapes = only_finetuned, only_reference, shapes
        parts = []
        for title, items in (
            ("shapes differ", shapes),
            ("only in the adapter", only_finetuned),
            ("only in the reference", only_reference),
        ):
            if items:
                more = f"; ... and {len(items) - limit} more" if len(items) > limit else ""
                parts.append(f"{len(items)} {title} ({'; '.join(items[:limit])}{more})")
        super().__init__(
            f"{source} does not fit the {target}: {', '.join(parts)}; was it trained on a model of this architecture?"
        )


@dataclass
class ParameterDelta:
    """Per-parameter `finetuned - reference` (float32) of one network, and the fine-tuned values (see module doc).

    `network` is the component it was taken against ("unet", "transformer"); `trained_on` the model of a pair
    that was the reference ("base" or "distilled"; None: not taken against a pair); `kind` "delta" (a fine-tune)
    or "custom-diffusion"; `reference_digest` the sha256 of the reference's values of these parameters.
    """

    delta: dict[str, torch.Tensor]
    finetuned: dict[str, torch.Tensor] = field(default_factory=dict)
    network: str = "unet"
    trained_on: str | None = None
    kind: str = "delta"
    source: str | None = None
    reference_digest: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        from pathlib import Path

        if self.source is None:
            return self.kind.replace("-", "_")
        path = Path(self.source.rstrip("/"))
        return path.stem if path.suffix else path.name

    def describe(self) -> str:
        return self.source or f"the {self.kind}"

    def norm(self) -> float:
        """The delta's Frobenius norm over all parameters."""
        return float(sum(d.double().pow(2).sum() for d in self.delta.values()) ** 0.5)

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "network": self.network,
            "trained_on": self.trained_on,
            "parameters": len(self.delta),
            "values": int(sum(d.numel() for d in self.delta.values())),
            "norm": self.norm(),
            **self.info,
        }


# ----------------------------------------------------------------------------------------------- comparing
def values_digest(values: dict[str, torch.Tensor], names: list[str]) -> str:
    """sha256 of `values[name]` for `names` (sorted; name, dtype, shape and bytes): which network a delta was
    taken against, recognised by content."""
    digest = hashlib.sha256()
    for name in sorted(names):
        tensor = values[name].detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_fits(
    finetuned: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    source: str,
    target: str,
    partial: bool = False,
) -> None:
    """DeltaMismatchError unless `finetuned` has the reference's names and shapes (`partial`: a subset of names,
    as a Custom Diffusion file holds)."""
    only_finetuned = sorted(set(finetuned) - set(reference))
    only_reference = [] if partial else sorted(set(reference) - set(finetuned))
    shapes = [
        f"{k}: {list(finetuned[k].shape)} vs {list(reference[k].shape)}"
        for k in sorted(finetuned)
        if k in reference and tuple(finetuned[k].shape) != tuple(reference[k].shape)
    ]
    if only_finetuned or only_reference or shapes:
        raise DeltaMismatchError(source, target, only_finetuned, only_reference, shapes)


def difference(finetuned: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], **fields: Any) -> ParameterDelta:
    """The ParameterDelta `finetuned - reference` over the parameters that differ (names already checked)."""
    delta: dict[str, torch.Tensor] = {}
    kept: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name in sorted(finetuned):
            ref = reference[name].detach()
            value = finetuned[name].detach().to(device=ref.device)
            if not value.is_floating_point() or torch.equal(value.to(ref.dtype), ref):
                continue
            delta[name] = value.float() - ref.float()
            kept[name] = value.to(ref.dtype).clone()
    digest = values_digest(reference, list(delta)) if delta else None
    return ParameterDelta(delta, kept, reference_digest=digest, **fields)


def delta_from_finetune(
    finetuned: Any,
    reference: torch.nn.Module | dict[str, torch.Tensor],
    *,
    trained_on: str | None = None,
    cache_dir: str | None = None,
    base_config: str | None = None,
    target: str | None = None,
    network: str | None = None,
) -> ParameterDelta:
    """`finetuned - reference` per parameter (see the module doc for the sources `finetuned` may be).

    `reference` is the network the fine-tune was made from: the base (or, for reverse transfer, the distilled)
    network. DeltaMismatchError (listing names and shapes) when the architectures differ. `base_config`: the repo
    or folder whose configs a single-file checkpoint takes (default: the one diffusers picks for its keys);
    `network` the pipeline component the fine-tune's network is ("unet" or "transformer"; default: from the
    reference's class).
    """
    from divdistill.control.finetuned import finetuned_state

    ref = network_parameters(reference) if isinstance(reference, torch.nn.Module) else dict(reference)
    if network is None:
        component = getattr(getattr(reference, "config", None), "_class_name", None)
        network = "transformer" if component and "Transformer" in component else "unet"
    state, source = finetuned_state(finetuned, ref, network, cache_dir=cache_dir, base_config=base_config)
    if target is None:
        target = f"reference {type(reference).__name__}" if isinstance(reference, torch.nn.Module) else "reference"
    check_fits(state, ref, source, target)
    delta = difference(state, ref, network=network, trained_on=trained_on, kind="delta", source=source)
    delta.info["changed"] = len(delta.delta)
    delta.info["unchanged"] = len(ref) - len(delta.delta)
    return delta
