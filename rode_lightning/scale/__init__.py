"""Training at scale, beside the network rather than inside it: FSDP2 sharding of the food LMM (``sharding.py``), the
Lightning strategy that saves and resumes the trainable state only (``strategy.py``), trainable-only training
checkpoints with the exact-resume state (``checkpointing.py``) and reading a sharded checkpoint folder without FSDP
(``sharded_checkpoint.py``). ``model/`` builds the network; it calls in here when a run is distributed or resumed.
"""
