// CProtobufC: the protobuf-c runtime (Debian libprotobuf-c-dev 1.4.x).
#pragma once
#include <protobuf-c/protobuf-c.h>
