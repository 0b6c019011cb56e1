"""Layer names shared by the builder and the weight importers.

Names follow keras.applications, so its weight files (and timm's, once renamed) map
by name: the layers of a block are ``block_prefix(stage, index)`` + a suffix
(``block2a_expand_conv``, ``block6aa_project_bn``), and the classifier is ``HEAD``.

Example:
    >>> block_prefix(stage=2, index=0) + "expand_conv"
    'block2a_expand_conv'
"""

from __future__ import annotations

HEAD = "predictions"


def block_prefix(stage: int, index: int) -> str:
    """Prefix of the layer names of block ``index`` (0-based) of ``stage`` (1-based).

    Blocks past the 26th of a stage continue as aa, ab, ... (XL has 32 blocks in
    one stage; keras.applications uses ``chr(97 + index)``, which gives '{', '|' ...).

    >>> block_prefix(1, 0), block_prefix(6, 25), block_prefix(6, 26)
    ('block1a_', 'block6z_', 'block6aa_')
    """
    return f"block{stage}{_block_letters(index)}_"


def _block_letters(index: int) -> str:
    return chr(97 + index) if index < 26 else chr(96 + index // 26) + chr(97 + index % 26)
