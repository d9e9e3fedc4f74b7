"""Multi-task heads (eq. 6-7): the fused features become six logits (click ... gift), one tower per task.

One file per head; importing this package registers them all.
"""

from farmcli.model.heads import mmoe, ple, shared_bottom  # noqa: F401  (registration side effects)
