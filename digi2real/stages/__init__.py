"""One module per rule of the workflow, named exactly as its rule.

Each stage module exposes `CONFIG_KEYS`, the dotted config keys it reads (the rule's `params`
are the slice of the resolved config at these keys, so a change to any of them reruns the rule
and nothing else), and `run`, its one entry function from its inputs to its outputs. Stage
modules import numpy, torch and the science modules inside `run`: Snakemake imports them at
parse time, in whatever Python runs it, to read `CONFIG_KEYS`.
"""
