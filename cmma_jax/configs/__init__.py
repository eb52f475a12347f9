"""Configs: one `get_config(arg=None)` per model (`arg`: the preset, "paper", "small" or "tiny").

`CONFIGS` maps a model name to its config module, e.g. `CONFIGS["cmma"].get_config("small")`.
"""

import difflib

from cmma_jax.configs import base, cgan, cmma, cvae, vlae

CONFIGS = {"cmma": cmma, "cvae": cvae, "cgan": cgan, "vlae": vlae}

__all__ = ["CONFIGS", "base", "cmma", "cvae", "cgan", "vlae", "unknown_overrides"]


def unknown_overrides(config, argv) -> list[str]:
    """One line per `--config.<field>=value` argument of `argv` that names no field of `config`,
    saying which fields there are (and the closest one), so that a typo fails in one line before
    any work, not in a 40-line traceback from the flag parser."""
    problems = []
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config."):].split("=", 1)[0]
        node, walked = config, []
        for part in path.split("."):
            fields = list(node.keys()) if hasattr(node, "keys") else []
            if part not in fields:
                where = ".".join(walked) or "the config"
                close = difflib.get_close_matches(part, fields, n=1)
                hint = f" Did you mean {'.'.join(walked + close)}?" if close else ""
                problems.append(f"Unknown config field {path!r}: {where} has no {part!r}; its "
                                f"fields are {', '.join(sorted(fields)) or 'none'}.{hint}")
                break
            node, walked = node[part], walked + [part]
    return problems
