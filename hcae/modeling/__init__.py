"""The HCAE encoder as a Hugging Face model.

The files in this folder import each other only with relative imports, because ``save_pretrained``
copies them next to the weights as remote code. Importing this package registers the ``hcae`` model
type with ``AutoConfig`` and ``AutoModel``, and marks both classes for ``auto_map`` in saved configs.
"""

from transformers import AutoConfig, AutoModel

from .configuration_hcae import HcaeConfig, HcaeConfigError, expand_mixer_types, swiglu_hidden_size
from .modeling_hcae import HcaeModel, HcaePreTrainedModel

AutoConfig.register(HcaeConfig.model_type, HcaeConfig, exist_ok=True)
AutoModel.register(HcaeConfig, HcaeModel, exist_ok=True)
HcaeConfig.register_for_auto_class()
HcaeModel.register_for_auto_class("AutoModel")

__all__ = [
    "HcaeConfig",
    "HcaeConfigError",
    "HcaeModel",
    "HcaePreTrainedModel",
    "expand_mixer_types",
    "swiglu_hidden_size",
]
