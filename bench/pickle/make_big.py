#!/usr/bin/env python3
"""Writes the benchmark inputs (nothing here loads a pickle):

  big.pkl      a legacy-style torch.save file (5 stacked protocol-2 pickles) whose data pickle is
               a state dict of many small tensors, keys and metadata strings, written opcode by
               opcode exactly as pickle.Pickler would (memo puts/gets, SETITEMS batches of 1000)
  big-zip.pt   a torch.save zip: the same data pickle as archive/data.pkl plus raw storages

usage: make_big.py OUT_DIR [TARGET_MB]
"""
import io
import os
import pickle
import struct
import sys
import zipfile


def u(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


class Memo:
    def __init__(self):
        self.n = 0

    def put(self):
        i = self.n
        self.n += 1
        return b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i)


def get(i):
    return b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i)


def data_pickle(target_bytes, out):
    m = Memo()
    w = out.write
    w(b"\x80\x02ccollections\nOrderedDict\n")
    od = m.n
    w(m.put() + b")R" + m.put())
    rebuild = None
    storage_cls = None
    written = 0
    i = 0
    w(b"(")
    while written < target_bytes:
        chunk = io.BytesIO()
        c = chunk.write
        c(u("model.layers.%d.block.%d.weight" % (i // 7, i % 7)) + m.put())
        if rebuild is None:
            rebuild = m.n
            c(b"ctorch._utils\n_rebuild_tensor_v2\n" + m.put())
        else:
            c(get(rebuild))
        c(b"((" + u("storage") + m.put())
        if storage_cls is None:
            storage_cls = m.n
            c(b"ctorch\nFloatStorage\n" + m.put())
        else:
            c(get(storage_cls))
        c(u(str(i)) + m.put() + u("cpu") + m.put() + b"K\x10t" + m.put() + b"Q")
        c(b"K\x00K\x04K\x04\x86" + m.put() + b"K\x04K\x01\x86" + m.put() + b"\x89" + get(od) + b")R" + m.put() + b"t" + m.put() + b"R" + m.put())
        blob = chunk.getvalue()
        w(blob)
        written += len(blob)
        i += 1
        if i % 1000 == 0:
            w(b"u(")
    w(b"u.")
    return i


def main():
    out_dir = sys.argv[1]
    target = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    os.makedirs(out_dir, exist_ok=True)
    buf = io.BytesIO()
    n = data_pickle(target * 1024 * 1024, buf)
    data_pkl = buf.getvalue()
    with open(os.path.join(out_dir, "big.pkl"), "wb") as f:
        f.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
        f.write(data_pkl)
        f.write(pickle.dumps([str(k) for k in range(min(n, 1000))], protocol=2))
        f.write(b"\x00" * (64 * 1024))
    with zipfile.ZipFile(os.path.join(out_dir, "big-zip.pt"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", b"little")
        blob = os.urandom(1 << 20)
        for k in range(256):
            z.writestr("archive/data/%d" % k, blob)
        z.writestr("archive/version", b"3\n")
    print("%d tensors, data pickle %d MB" % (n, len(data_pkl) >> 20))


if __name__ == "__main__":
    main()
