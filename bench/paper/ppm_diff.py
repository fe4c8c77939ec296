#!/usr/bin/env python3
"""Prints how many pixels of two binary PPM (P6) screenshots differ.

Screens of another size differ in every pixel of the first. Used by run.sh
to check that home's replica shows what the surrogate's showed.
"""
import sys


def load(path):
    data = open(path, "rb").read()
    fields, at = [], 0
    while len(fields) < 4:  # P6, width, height, maxval
        while data[at:at + 1].isspace():
            at += 1
        end = at
        while end < len(data) and not data[end:end + 1].isspace():
            end += 1
        fields.append(data[at:end])
        at = end
    if fields[0] != b"P6" or fields[3] != b"255":
        sys.exit("%s: not an 8-bit binary PPM (P6)" % path)
    width, height = int(fields[1]), int(fields[2])
    pixels = data[at + 1:]
    if len(pixels) != width * height * 3:
        sys.exit("%s: %d bytes of pixels for %dx%d" % (path, len(pixels), width, height))
    return (width, height), pixels


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: ppm_diff.py A.ppm B.ppm")
    (size_a, a), (size_b, b) = load(sys.argv[1]), load(sys.argv[2])
    if size_a != size_b:
        print(size_a[0] * size_a[1])
        return
    print(sum(a[i:i + 3] != b[i:i + 3] for i in range(0, len(a), 3)))


if __name__ == "__main__":
    main()
