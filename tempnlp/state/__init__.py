"""Per-sample state addressed by dataset index: the index column, and saving the state with checkpoints.

A re-export: the home of these is :mod:`tempnlp.train.state`, beside the trainer callback that saves and restores
the state with every checkpoint. ``from tempnlp.state import add_index_column`` keeps working.
"""

from tempnlp.train.state import INDEX_COLUMN, STATE_FILE, add_index_column, load_loss_state, save_loss_state

__all__ = ["INDEX_COLUMN", "STATE_FILE", "add_index_column", "load_loss_state", "save_loss_state"]
