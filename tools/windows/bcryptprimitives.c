/*
 * A stand-in bcryptprimitives.dll for Wine 8 (Debian 12), which lacks it: Rust's std and
 * getrandom import ProcessPrng from it on Windows, and a program linking hnapi.dll does
 * not load without it. It forwards to RtlGenRandom (advapi32's SystemFunction036).
 * Real Windows 10 and later have the DLL: this is for the Wine tests only (tools/windows.sh)
 * and is never shipped.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG n = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}
