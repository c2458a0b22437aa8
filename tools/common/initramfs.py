"""Initramfs pieces shared by tools/kvm-lab and guest-images/linux/build-guest:
kernel modules in load order, and a newc cpio archive written without root
(device nodes are archive entries, not files that need mknod)."""

import os
import re
import stat
import subprocess


class Archive:
    """Entries of a newc cpio archive, in the order they are added."""

    def __init__(self):
        self.entries = []  # (name, mode, data, (major, minor))

    def dir(self, name):
        self.entries.append((name, stat.S_IFDIR | 0o755, b"", (0, 0)))

    def file(self, name, data, mode=0o644):
        self.entries.append((name, stat.S_IFREG | mode, data, (0, 0)))

    def copy(self, name, path, mode=None):
        with open(path, "rb") as f:
            data = f.read()
        self.file(name, data, mode if mode is not None else stat.S_IMODE(os.stat(path).st_mode))

    def symlink(self, name, target):
        self.entries.append((name, stat.S_IFLNK | 0o777, target.encode(), (0, 0)))

    def char_device(self, name, major, minor, mode=0o600):
        self.entries.append((name, stat.S_IFCHR | mode, b"", (major, minor)))

    def busybox(self, path="/bin/busybox"):
        """busybox-static at bin/busybox, and a symlink for each of its applets."""
        self.copy("bin/busybox", path, 0o755)
        applets = subprocess.run([path, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            if applet != "bin/busybox":
                self.symlink(applet, "/bin/busybox")

    def write_tree(self, folder):
        """Writes the entries as files under folder (which must not exist), for
        `mke2fs -d`. Device nodes are left out: making them needs root, and
        the guest mounts devtmpfs on /dev before anything opens one."""
        os.makedirs(folder)
        for name, mode, data, _ in self.entries:
            path = os.path.join(folder, name)
            if stat.S_ISDIR(mode):
                os.makedirs(path, exist_ok=True)
            elif stat.S_ISLNK(mode):
                os.symlink(data.decode(), path)
            elif stat.S_ISREG(mode):
                with open(path, "wb") as f:
                    f.write(data)
                os.chmod(path, stat.S_IMODE(mode))

    def write(self, path):
        """Writes the archive (uncompressed) to path, atomically."""
        def pad(n):
            return b"\0" * ((4 - n % 4) % 4)

        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            for ino, (name, mode, data, (major, minor)) in enumerate(
                    self.entries + [("TRAILER!!!", 0, b"", (0, 0))], 1):
                nb = name.encode() + b"\0"
                hdr = "070701" + "".join(f"{v:08X}" for v in (
                    ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(nb), 0))
                f.write(hdr.encode() + nb + pad(110 + len(nb)) + data + pad(len(data)))
        os.replace(tmp, path)


def module_depends(path):
    """The names in a .ko's depends= modinfo string."""
    with open(path, "rb") as f:
        data = f.read()
    m = re.search(rb"\x00depends=([^\x00]*)\x00", data)
    return [d.decode() for d in m.group(1).split(b",") if d] if m else []


def ordered_modules(moddir, names):
    """Paths of every module `names` needs under moddir, dependencies first.
    Raises LookupError naming a module that is not there."""
    index = {}
    for root, _, files in os.walk(moddir):
        for f in files:
            if f.endswith(".ko"):
                index[f[:-3].replace("-", "_")] = os.path.join(root, f)
    order, seen = [], set()

    def visit(name):
        key = name.replace("-", "_")
        if key in seen:
            return
        if key not in index:
            raise LookupError(name)
        seen.add(key)
        for dep in module_depends(index[key]):
            visit(dep)
        order.append(index[key])

    for name in names:
        visit(name)
    return order
