#!/usr/bin/env python3
"""The layering rule on every source file, headers included: a file in a layer's folder may
include only files of the folders that layer may see (build/layers.json, written by CMake from
the mirad_layer() calls in CMakeLists.txt). The compiler enforces the same rule for .cpp/.cu
files through each layer's include folder; this check also covers headers that no file of
their own layer includes, and relative includes ("../"), which would slip past the compiler.

    tests/check_layers.py BUILD/layers.json REPO_ROOT
"""
import json
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
SOURCE_EXT = ('.h', '.cpp', '.cu', '.cuh')


def main():
    layers = json.load(open(sys.argv[1]))
    root = sys.argv[2]
    owner = {}  # folder -> layer
    for name, layer in layers.items():
        for d in layer['dirs']:
            owner[d] = name
    problems, checked = [], 0
    for folder, name in sorted(owner.items()):
        visible = layers[name]['visible']
        for f in sorted(os.listdir(os.path.join(root, folder))):
            if not f.endswith(SOURCE_EXT):
                continue
            path = os.path.join(folder, f)
            text = open(os.path.join(root, path), encoding='utf-8').read()
            for inc in INCLUDE.findall(text):
                checked += 1
                if '..' in inc.split('/'):
                    problems.append(f'{path}: relative include "{inc}"')
                    continue
                inc_dir = os.path.dirname(inc)
                if not inc_dir:
                    problems.append(f'{path}: "{inc}" is not a repository path (write the folder)')
                elif inc_dir not in visible:
                    up = owner.get(inc_dir, 'no layer')
                    problems.append(f'{path} (layer {name}) includes "{inc}" (layer {up}), '
                                    f'which it may not see: {", ".join(visible)}')
                elif not os.path.isfile(os.path.join(root, inc)):
                    problems.append(f'{path}: "{inc}" does not exist')
    for p in problems:
        print('FAIL', p)
    print(f'{checked} includes in {len(owner)} layer folders checked, {len(problems)} problems')
    return 1 if problems or checked == 0 else 0


if __name__ == '__main__':
    sys.exit(main())
