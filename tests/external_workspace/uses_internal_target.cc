// Depends on an internal nbio target: must be refused by visibility.
#include "reactor/sys/syscall.h"

int main() { return 0; }
