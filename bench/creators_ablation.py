"""The creators feed's blend, one part at a time, on the replay of ``livelens eval --feed creators``.

``python -m bench.creators_ablation [--users N] [--cutoff discovery|trigger]``: LiveLens with each column
group alone or left out (``CreatorParams.weights``), same users, candidates and exclusions; prints and
writes ``bench/results/creators_ablation_<cutoff>.json``. Needs the title vectors cached by ``livelens eval``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ranking.creator_eval import CreatorProtocol, evaluate_creators
from ranking.creators import CreatorParams
from ranking.datasets import load_microlens
from streams.cli import _cached_encoder
from streams.params import user_model_params_from_settings
from streams.settings import Settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--cutoff", choices=["discovery", "trigger"], default="discovery")
    args = ap.parse_args()
    s = Settings()
    data = load_microlens(s.datasets_dir)
    vectors = _cached_encoder(s, data.name)([data.items[i].title for i in sorted(data.items)])
    base = dict(CreatorParams().weights)
    variants = {
        "defaults": base,
        "taste only": {"creators.sim": base["creators.sim"]},
        "co-follow only": {k: w for k, w in base.items() if k.startswith("cofollow")},
        "without engaged": {k: w for k, w in base.items() if not k.startswith("engaged")},
        "without taste": {k: w for k, w in base.items() if not k.startswith("creators")},
    }
    out = {}
    for name, weights in variants.items():
        result = evaluate_creators(
            data,
            vectors,
            user_model_params_from_settings(s),
            users=args.users,
            protocol=CreatorProtocol(cutoff=args.cutoff),
            params=CreatorParams(weights=weights),
        )
        out[name] = result.methods["livelens"]
        print(name, out[name], flush=True)
    path = Path(f"bench/results/creators_ablation_{args.cutoff}.json")
    path.write_text(json.dumps({"users": args.users, "cutoff": args.cutoff, "methods": out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
