/* pktswitch native core: the whole C interface, one header per concern (docs/native.md has
 * the theory of operation). native/build.py hands these headers to cffi in this order, as its
 * declarations, so each must stay inside what cffi's cdef parser accepts (no macros with
 * bodies, no conditionals). */
#pragma once
#include "pks_packet.h"
#include "pks_flow.h"
#include "pks_service.h"
#include "pks_snat.h"
#include "pks_clients.h"
#include "pks_table.h"
#include "pks_trace.h"
#include "pks_program.h"
#include "pks_drain.h"
