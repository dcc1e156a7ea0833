"""kmsctl's named temporary file, against a kmsctl built with -DKMS_TEST_HOOKS=ON: with
KMSCTL_TEST_NAMED_TMPFILE=1 in its environment kmsctl writes its output through a named
temporary file, as it does where O_TMPFILE is not available (NFS, no /proc), instead of an
unnamed one (test_kmsctl_signals.py covers that one).
"""

import os
import signal

from test_kmsctl_signals import EnvelopeSignalTest


class NamedTmpfileSignalTest(EnvelopeSignalTest):

    def test_sigint_with_a_named_temporary_file(self):
        """The temporary file has a name, "restored.bin.XXXXXX", and the signal handler
        removes it."""
        tmp = self.interrupted_decrypt("sig-dec-named", "restored.bin", signal.SIGINT,
                                       env={"KMSCTL_TEST_NAMED_TMPFILE": "1"})
        self.assertRegex(tmp, r"^restored\.bin\.[A-Za-z0-9]{6}$")
        self.assertEqual(sorted(os.listdir(self.dir)), ["src.enc", "src.enc.meta.json"])


# only the test above: the inherited ones run in test_kmsctl_signals.py
for _name in [n for n in dir(EnvelopeSignalTest) if n.startswith("test_")]:
    setattr(NamedTmpfileSignalTest, _name, None)
del EnvelopeSignalTest
