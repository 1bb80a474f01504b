"""Small job functions used by the job-plumbing tests (run by a real RQ worker)."""


def count_to(ctx, n: int):
    for i in range(n):
        ctx.progress(i + 1, n, f"step {i + 1}")
    ctx.log("counted")
    return {"counted": n}


def explode(ctx, message: str):
    ctx.progress(1, 3, "about to fail")
    raise ValueError(message)


def spin(ctx, seconds: float):
    """Busy for ``seconds``, reporting progress (a job to kill in the middle)."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ctx.progress(int(seconds - (end - time.monotonic())), int(seconds), "spinning")
        time.sleep(0.2)
    return {"spun": seconds}
