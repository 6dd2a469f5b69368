FALLOC_FL_KEEP_SIZE: int
FALLOC_FL_PUNCH_HOLE: int
FALLOC_FL_ZERO_RANGE: int

def fallocate(fd: int, mode: int, offset: int, length: int, /) -> None: ...
