"""How often would a speculative round of exact conv STDP be right?

A round would forward a chunk of samples with the chunk-start weights, then verify each sample
against the weights it really sees (those left by the samples before it). This measures, during
exact single-sample learning of mozafari2018's conv1 (or conv2, after conv1 learned the same
images), how often a sample's winners and post steps under the chunk-start weights equal its
exact ones, and how many samples of a chunk pass before the first that differs.

    python bench/speculation.py --data-root ../shared/data --images 3000 --layer conv1
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--layer", choices=("conv1", "conv2"), default="conv1")
    parser.add_argument("--chunk", type=int, default=32)
    args = parser.parse_args(argv)
    import torch
    import data
    import models
    import s1c1
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dataset = data.load_dataset("mnist", args.data_root, download=False)
    model = models.create_model("mozafari2018", num_classes=10)
    inputs = torch.from_numpy(s1c1.encode(dataset.train_images[:args.images], model.frontend))
    layer = model.blocks[0]
    if args.layer == "conv2":
        for start in range(0, args.images, 32):
            layer.learn(inputs[start:start + min(32, layer.limit())])
        inputs, layer = layer.forward_times(inputs), model.blocks[1]
    matched, runs, start = 0, [], 0
    while start < args.images:
        size = min(args.chunk, args.images - start, layer.limit())
        chunk = inputs[start:start + size]
        guessed_winners, guessed_post, _ = layer.learning_winners(chunk)
        first_miss = None
        for i in range(size):
            winners, post, _ = layer.learning_winners(chunk[i:i + 1])
            same = torch.equal(winners[0], guessed_winners[i]) and torch.equal(post[0], guessed_post[i])
            matched += same
            if not same and first_miss is None:
                first_miss = i
            layer.learn(chunk[i:i + 1])
        runs.append(size if first_miss is None else first_miss)
        start += size
    result = {"layer": args.layer, "images": args.images, "chunk": args.chunk,
              "matching": matched / args.images, "mean_run_to_first_miss": sum(runs) / len(runs)}
    print(result)
    return result


if __name__ == "__main__":
    main()
