// bindings/configs.cpp — the name tuples and the typed training configurations.
//
// _core.ACTIVATIONS, LOSSES, OPTIMIZERS, SCHEDULES, INIT_SCHEMES, LAYER_TYPES, FIT_STATUSES:
// the names of each enum's one table (fastmlp/names.hpp), in enum order.
// _core.OptimizerConfig and _core.ScheduleConfig: the C++ structs, built by
// keyword and validated once, on construction (OptimizerConfig::validate,
// Schedule::validate); their attributes are read-only.
#include <pybind11/pybind11.h>

#include <initializer_list>
#include <string>

#include "bindings.hpp"
#include "fastmlp/activation.hpp"
#include "fastmlp/loss.hpp"
#include "fastmlp/network.hpp"
#include "fastmlp/optimizer.hpp"

namespace fastmlp::bindings {
namespace {

namespace py = pybind11;

template <typename Enum, std::size_t N>
py::tuple names_tuple(const NameTable<Enum, N>& table) {
    py::tuple names(N);
    for (std::size_t i = 0; i < N; ++i) names[i] = py::str(table.entries[i].name);
    return names;
}

// "Name(key=value, ...)" from the object's own attributes.
std::string config_repr(const py::object& self, const char* name,
                        std::initializer_list<const char*> keys) {
    std::string text = std::string(name) + "(";
    for (const char* key : keys) {
        if (text.back() != '(') text += ", ";
        text += std::string(key) + "=" + std::string(py::repr(self.attr(key)));
    }
    return text + ")";
}

OptimizerConfig make_optimizer_config(const std::string& kind, double lr, double momentum,
                                      double dampening, double weight_decay, bool nesterov,
                                      double beta1, double beta2, double eps, double clip_norm,
                                      double clip_value) {
    OptimizerConfig c;
    c.kind = optimizer_from_name(kind);
    c.lr = lr;
    c.momentum = momentum;
    c.dampening = dampening;
    c.weight_decay = weight_decay;
    c.nesterov = nesterov;
    c.beta1 = beta1;
    c.beta2 = beta2;
    c.eps = eps;
    c.clip_norm = clip_norm;
    c.clip_value = clip_value;
    c.validate();
    return c;
}

void bind_optimizer_config(py::module_& m) {
    const OptimizerConfig d;
    py::class_<OptimizerConfig>(m, "OptimizerConfig")
        .def(py::init(&make_optimizer_config), py::kw_only(),
             py::arg("kind") = optimizer_name(d.kind), py::arg("lr") = d.lr,
             py::arg("momentum") = d.momentum, py::arg("dampening") = d.dampening,
             py::arg("weight_decay") = d.weight_decay, py::arg("nesterov") = d.nesterov,
             py::arg("beta1") = d.beta1, py::arg("beta2") = d.beta2, py::arg("eps") = d.eps,
             py::arg("clip_norm") = d.clip_norm, py::arg("clip_value") = d.clip_value)
        .def_property_readonly("kind",
                               [](const OptimizerConfig& c) { return optimizer_name(c.kind); })
        .def_readonly("lr", &OptimizerConfig::lr)
        .def_readonly("momentum", &OptimizerConfig::momentum)
        .def_readonly("dampening", &OptimizerConfig::dampening)
        .def_readonly("weight_decay", &OptimizerConfig::weight_decay)
        .def_readonly("nesterov", &OptimizerConfig::nesterov)
        .def_readonly("beta1", &OptimizerConfig::beta1)
        .def_readonly("beta2", &OptimizerConfig::beta2)
        .def_readonly("eps", &OptimizerConfig::eps)
        .def_readonly("clip_norm", &OptimizerConfig::clip_norm)
        .def_readonly("clip_value", &OptimizerConfig::clip_value)
        .def_property_readonly("state_buffers", &OptimizerConfig::state_buffers)
        .def("__repr__", [](const py::object& self) {
            return config_repr(self, "OptimizerConfig",
                               {"kind", "lr", "momentum", "dampening", "weight_decay", "nesterov",
                                "beta1", "beta2", "eps", "clip_norm", "clip_value"});
        });
}

Schedule make_schedule(const std::string& kind, index warmup_steps, index step_size,
                       double gamma, index total_steps, double min_factor) {
    Schedule s;
    s.kind = schedule_from_name(kind);
    s.warmup_steps = warmup_steps;
    s.step_size = step_size;
    s.gamma = gamma;
    s.total_steps = total_steps;
    s.min_factor = min_factor;
    s.validate();
    return s;
}

void bind_schedule_config(py::module_& m) {
    const Schedule d;
    py::class_<Schedule>(m, "ScheduleConfig")
        .def(py::init(&make_schedule), py::kw_only(), py::arg("kind") = schedule_name(d.kind),
             py::arg("warmup_steps") = d.warmup_steps, py::arg("step_size") = d.step_size,
             py::arg("gamma") = d.gamma, py::arg("total_steps") = d.total_steps,
             py::arg("min_factor") = d.min_factor)
        .def_property_readonly("kind", [](const Schedule& s) { return schedule_name(s.kind); })
        .def_readonly("warmup_steps", &Schedule::warmup_steps)
        .def_readonly("step_size", &Schedule::step_size)
        .def_readonly("gamma", &Schedule::gamma)
        .def_readonly("total_steps", &Schedule::total_steps)
        .def_readonly("min_factor", &Schedule::min_factor)
        .def("__repr__", [](const py::object& self) {
            return config_repr(self, "ScheduleConfig",
                               {"kind", "warmup_steps", "step_size", "gamma", "total_steps",
                                "min_factor"});
        });
}

}  // namespace

void bind_configs(py::module_& m) {
    m.attr("ACTIVATIONS") = names_tuple(activation_names);
    m.attr("LOSSES") = names_tuple(loss_names);
    m.attr("OPTIMIZERS") = names_tuple(optimizer_names);
    m.attr("SCHEDULES") = names_tuple(schedule_names);
    m.attr("INIT_SCHEMES") = names_tuple(init_names);
    m.attr("LAYER_TYPES") = names_tuple(layer_kind_names);
    m.attr("FIT_STATUSES") = names_tuple(fit_status_names);
    bind_optimizer_config(m);
    bind_schedule_config(m);
}

}  // namespace fastmlp::bindings
