// SPDX-License-Identifier: Apache-2.0 OR MIT
// Linked into every test binary built for Windows: an unhandled exception (an access
// violation that tmf's handler passed on, an abort) ends the process with status 139, as a
// SIGSEGV would on Linux. Wine sometimes exits with status 0 after an unhandled access
// violation, which would hide a crash from ctest.
#include <windows.h>

namespace {
LONG WINAPI tmf_test_unhandled(EXCEPTION_POINTERS*) {
  ::TerminateProcess(::GetCurrentProcess(), 139);
  return EXCEPTION_EXECUTE_HANDLER;
}
const bool g_installed = (::SetUnhandledExceptionFilter(&tmf_test_unhandled), true);
}  // namespace
