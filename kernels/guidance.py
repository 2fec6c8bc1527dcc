"""Guidance combinations.

ZSVD's editing objective (Varanka et al., WACV 2026, sec. 3): with the null
prompt's prediction eps_null and the remove prompt's eps_remove,
``eps = eps_remove + s (eps_null - eps_remove)``, i.e. classifier-free guidance
that pushes away from the remove prompt. In clean-latent (x0) terms the same
affine combination holds, because x0_hat is affine in eps at a fixed x and sigma.
"""

import torch


def negative_prompt_edit(pred_null: torch.Tensor, pred_remove: torch.Tensor, strength: float) -> torch.Tensor:
    """``pred_remove + strength * (pred_null - pred_remove)`` (ZSVD editing objective).

    Args:
        pred_null: the model's prediction with the null (empty) prompt.
        pred_remove: the prediction with the prompt naming what to remove.
        strength: ``s``, how far to move from the remove path towards (and past) the null path.

    Returns:
        The combined prediction, the inputs' shape.
    """
    return pred_remove + (pred_null - pred_remove) * strength
