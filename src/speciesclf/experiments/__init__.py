"""DVC experiments read back after they ran: ablation tables of a recipe's variants, and ensembles of runs from
several experiments (git refs, worktrees, outputs from the DVC cache). No stage imports this package."""
