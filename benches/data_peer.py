"""The Python peers of `tubelet bench data`: decord and PyAV decoding the same frames.

`tubelet bench data --python PY` writes a plan (per clip: file, frame indices, decoded
height and width) and runs this script with it. Each reader decodes every clip of the plan,
resized in the decoder to the size tubelet decodes at, with N worker processes (as PyTorch's
DataLoader workers; one decoding thread per video, as mmaction2's DecordInit), and prints one
JSON line per (reader, threads): {"reader", "threads", "clips_per_s"} or {"reader", "error"}.

- decord: VideoReader(file, width, height, num_threads=1).get_batch(indices), opened per clip
  as mmaction2's DecordInit + DecordDecode do.
- PyAV: decode from the start to the last wanted frame, keeping the wanted ones
  (mmaction2's PyAVDecode, mode 'accurate'), converted with frame.to_ndarray(rgb24, w, h).

Install: pip install decord av numpy
"""

import argparse
import json
import sys
import time
from multiprocessing import Pool


def decord_clip(c):
    import decord

    vr = decord.VideoReader(c["file"], width=c["width"], height=c["height"], num_threads=1)
    return vr.get_batch(c["indices"]).asnumpy().shape[0]


def pyav_clip(c):
    import av

    wanted = sorted(set(c["indices"]))
    last = wanted[-1]
    keep = {}
    with av.open(c["file"]) as container:
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                keep[i] = frame.to_ndarray(format="rgb24", width=c["width"], height=c["height"])
            if i >= last:
                break
    return sum(1 for i in c["indices"] if i in keep)


READERS = {"decord": decord_clip, "pyav": pyav_clip}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", required=True)
    ap.add_argument("--threads", default="1")
    a = ap.parse_args()
    clips = json.load(open(a.plan))["clips"]
    if not clips:
        for name in READERS:
            print(json.dumps({"reader": name, "threads": 0, "error": "the plan has no video clips (a rawframes list?)"}))
        return
    for name, fn in READERS.items():
        try:
            fn(clips[0])  # warm-up, and the import check
        except Exception as e:  # missing package, unreadable file: reported, not fatal
            print(json.dumps({"reader": name, "threads": 0, "error": f"{type(e).__name__}: {e}"}))
            continue
        for t in [int(x) for x in a.threads.split(",")]:
            start = time.perf_counter()
            if t == 1:
                frames = [fn(c) for c in clips]
            else:
                with Pool(t) as pool:
                    frames = pool.map(fn, clips, chunksize=1)
            dt = time.perf_counter() - start
            print(json.dumps({"reader": name, "threads": t, "clips_per_s": len(clips) / dt, "frames": sum(frames)}))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
