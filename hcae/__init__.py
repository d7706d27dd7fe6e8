"""hcae: Hybrid Convolutional-Attention Encoders for text embeddings.

Importing the package registers the ``hcae`` model type with ``AutoConfig`` and ``AutoModel``.
"""

from hcae.modeling import HcaeConfig, HcaeModel

__all__ = ["HcaeConfig", "HcaeModel"]
__version__ = "0.1.0"
