"""SeqIO tasks and mixtures for prepared datasets; importing this module registers them."""
