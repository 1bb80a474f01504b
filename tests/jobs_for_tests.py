"""Small job functions used by the job-plumbing tests (run by a real RQ worker)."""


def count_to(ctx, n: int):
    for i in range(n):
        ctx.progress(i + 1, n, f"step {i + 1}")
    ctx.log("counted")
    return {"counted": n}


def explode(ctx, message: str):
    ctx.progress(1, 3, "about to fail")
    raise ValueError(message)
