// Anchor for scripts/bench-rpc: a C++ gRPC server (Debian libgrpc++) serving shardrank.v1.Shard/Lookup
// from the same synthetic table as `shardrank shard --synthetic ROWSxDIM`, so both can be measured
// under the same h2load command. Not part of ShardRank; built by scripts/bench-rpc-anchor.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include "shardrank/v1/shard.grpc.pb.h"

class ShardImpl final : public shardrank::v1::Shard::Service {
 public:
  ShardImpl(size_t rows, size_t dim) : rows_(rows), dim_(dim), data_(rows * dim) {
    for (size_t i = 0; i < rows; i++)
      for (size_t j = 0; j < dim; j++) data_[i * dim + j] = float((i * 31 + j) % 1000) / 1000.0f;
  }

  grpc::Status Lookup(grpc::ServerContext*, const shardrank::v1::LookupRequest* req,
                      shardrank::v1::LookupResponse* resp) override {
    if (req->table() != "items") return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown table");
    size_t found = 0;
    for (auto id : req->ids()) if (id < rows_) found++;
    std::string* v = resp->mutable_vectors();
    v->resize(found * dim_ * 4);
    char* out = v->data();
    for (auto id : req->ids()) {
      if (id < rows_) {
        memcpy(out, &data_[id * dim_], dim_ * 4);
        out += dim_ * 4;
      } else {
        resp->add_missing_ids(id);
      }
    }
    resp->set_dim(dim_);
    resp->set_dtype(shardrank::v1::DTYPE_F32);
    resp->set_version(1);
    resp->set_shard_count(1);
    return grpc::Status::OK;
  }

 private:
  size_t rows_, dim_;
  std::vector<float> data_;
};

int main(int argc, char** argv) {
  int port = argc > 1 ? atoi(argv[1]) : 0;
  ShardImpl service(100000, 64);
  grpc::ServerBuilder builder;
  int selected = 0;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(), &selected);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server(builder.BuildAndStart());
  if (!server) { fprintf(stderr, "cannot start\n"); return 1; }
  printf("grpc++ anchor: listening on 127.0.0.1:%d\n", selected);
  fflush(stdout);
  server->Wait();
  return 0;
}
