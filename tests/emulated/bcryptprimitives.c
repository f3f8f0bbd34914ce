/* Test-only stand-in for bcryptprimitives.dll, which Debian's wine 8 lacks.
 *
 * Rust's standard library on Windows imports ProcessPrng from it (for HashMap seeds), so
 * without this DLL next to the .exe wine refuses to start the program at all. ProcessPrng
 * is forwarded to SystemFunction036 (RtlGenRandom), which wine has. This file belongs to
 * scripts/test-emulated only: real Windows 10 and later ship the genuine DLL. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* RtlGenRandom takes a 32-bit length; ProcessPrng a pointer-sized one. */
    while (len > 0) {
        ULONG chunk = len > 0x80000000u ? 0x80000000u : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
