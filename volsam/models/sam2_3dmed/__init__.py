"""SAM2-3dMed: SAM2.1 with slice relative position prediction (SRPP) and a boundary branch
fused into the mask path, propagating prompts through a volume's slices
(spec: ``sam2-3dmed.md``; paper arXiv 2510.08967).

Modules, one component each: :mod:`.config` (dataclasses), :mod:`.build` (from the ``sam2``
package's SAM2.1 configs), :mod:`.boundary` and :mod:`.srpp` (the two heads), :mod:`.model`,
:mod:`.checkpoint` (strict, safe loading), :mod:`.variants` (which SAM2 a state dict is),
:mod:`.detect` (``volsam weights inspect``), :mod:`.slicing` and :mod:`.frames` (slices as
model inputs), :mod:`.memory` and :mod:`.tracker` (propagation). The interactive session is
:mod:`volsam.sessions.propagation_session`; :mod:`volsam.methods` loads the model for it. Importing this package does not import torch.
"""
