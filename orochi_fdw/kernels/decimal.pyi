import numpy as np

DEC64_NAN: int

def format_decimal64(values: np.ndarray, validity: np.ndarray | None, scale: int) -> tuple[np.ndarray, np.ndarray]: ...
def parse_decimal64(offsets: np.ndarray, data: np.ndarray, validity: np.ndarray | None, scale: int,
                    precision: int, out: np.ndarray) -> tuple[int, int]: ...
