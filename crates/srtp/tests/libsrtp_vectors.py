# Prints the interop vectors in tests.rs (`LIBSRTP_*`): packets protected by libsrtp 2
# through pylibsrtp (pip install pylibsrtp), for each suite tapir supports.
import struct
from pylibsrtp import Policy, Session

CM_MASTER = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139" "0EC675AD498AFEEBB6960B3AABE6")
GCM_MASTER = bytes.fromhex("000102030405060708090a0b0c0d0e0f" "517569642070726f2071756f")


def rtp(seq, ext=False):
    first = 0x80 | (0x10 if ext else 0) | (1 if ext else 0)
    head = struct.pack("!BBHII", first, 0, seq, 160 * seq & 0xFFFFFFFF, 0xDEADBEEF)
    if ext:
        head += struct.pack("!I", 0x01020304) + struct.pack("!HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    return head + bytes((seq + i) & 0xFF for i in range(20))


def rtcp():
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, 0xDEADBEEF, 1, 2, 3, 4, 5)


for name, profile, master in [
    ("CM80", Policy.SRTP_PROFILE_AES128_CM_SHA1_80, CM_MASTER),
    ("CM32", Policy.SRTP_PROFILE_AES128_CM_SHA1_32, CM_MASTER),
    ("GCM", Policy.SRTP_PROFILE_AEAD_AES_128_GCM, GCM_MASTER),
]:
    tx = Session(Policy(key=master, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    print(f"// {name}")
    for seq, ext in [(65534, False), (65535, True), (0, False), (1, False)]:
        print(f'("{rtp(seq, ext).hex()}", "{tx.protect(rtp(seq, ext)).hex()}"),')
    for _ in range(2):
        print(f'("{rtcp().hex()}", "{tx.protect_rtcp(rtcp()).hex()}"),')
